"""One BPTT training step of the lecture RNN, measured side by side: tinygrad_rnn, PyTorch, numpy floors.

The network (row-vector convention, one-hot inputs, vocabulary n = k = V, hidden d, batch B, length T):

    a_t = x_t U + s_{t-1} W + b,   s_t = tanh(a_t),   y_t = s_t V + c,   L = Σ_t Σ_batch CE(y_t, target_t)

One step = forward + the gradients of U, W, b, V, c. The implementations (same weights, same data):

    tinygrad       tinygrad_rnn nn.RNN.loss + backward, per-step copies on (the product as users run it)
    torch_loop     PyTorch autograd, the cell written from ops in a Python loop, CE per step
    torch_stacked  the same loop, the logits of all steps stacked into one CE
    torch_fused    torch.nn.RNN (fused) + one Linear + one CE
    numpy_minchar  hand-written numpy BPTT, min-char-rnn style: every op inside the time loops
    numpy_hoisted  hand-written numpy BPTT with only the recurrence in the loops; the input projection, output
                   layer, softmax and every weight gradient are single ops over all T·B rows
    matmul_floor   only the matmuls of numpy_hoisted, into preallocated buffers (no elementwise work at all)

plus the FLOP floor: 2TB(5Vd + 3d²) FLOPs at the sgemm GFLOP/s measured on this machine.

Usage: `run_benchmark(GRID, out_dir)` (what `tinygrad-rnn bench` calls), or the pieces: `make_problem`,
`IMPLEMENTATIONS`, `check_implementations`, `time_steps`, `peak_memory`, `op_overhead`, `profile_tinygrad`.
BLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads, so this module never changes them: run it as
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE tinygrad-rnn bench` (what `make bench` does); the header of the
results says which kernel numpy's BLAS actually uses.
"""
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARAMS = ("U", "W", "b", "V", "c")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- the grid -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One benchmark size: batch B, sequence length T, hidden size d, vocabulary V (= input = output size)."""
    B: int
    T: int
    d: int
    V: int

    @property
    def label(self):
        return f"({self.B},{self.T},{self.d},{self.V})"

    @property
    def flops(self):
        """Matmul FLOPs of one step: forward xU, sW, sV; backward dV, dY Vᵀ, dU, dW, δ Wᵀ."""
        return 2 * self.T * self.B * (5 * self.V * self.d + 3 * self.d * self.d)


GRID = [Row(1, 25, 16, 4), Row(1, 100, 100, 65), Row(32, 50, 128, 65), Row(32, 100, 512, 65),
        Row(64, 50, 1024, 65), Row(1, 5000, 32, 16)]
QUICK_GRID = GRID[:1]


def parse_rows(text):
    """"B,T,d,V;B,T,d,V" (or the grid's labels "(1,25,16,4)") → [Row, ...]."""
    rows = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        fields = part.strip("()").split(",")
        if len(fields) != 4 or not all(f.isdigit() and int(f) > 0 for f in fields):
            raise ValueError(f"bench --rows: each row is four positive integers B,T,d,V, got {part!r}")
        rows.append(Row(*map(int, fields)))
    if not rows:
        raise ValueError("bench --rows: no rows given (example: --rows '1,25,16,4;32,50,128,65')")
    return rows


# --- the problem: same weights and data for every implementation ------------------------------------------

@dataclass
class Problem:
    row: Row
    weights: dict          # U (V,d), W (d,d), b (d,), V (d,V), c (V,), numpy arrays of `dtype`
    xs: np.ndarray         # (T, B, V) one-hot inputs
    targets: np.ndarray    # (T, B) int64 next-character ids
    dtype: type


def make_problem(row, dtype=np.float32, seed=0):
    """Weights uniform in ±1/√d (PyTorch's RNN init), a random character sequence as one-hot inputs."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(row.d)
    shapes = {"U": (row.V, row.d), "W": (row.d, row.d), "b": (row.d,), "V": (row.d, row.V), "c": (row.V,)}
    weights = {name: rng.uniform(-bound, bound, size=shape).astype(dtype) for name, shape in shapes.items()}
    ids = rng.integers(0, row.V, size=(row.T + 1, row.B))
    xs = np.eye(row.V, dtype=dtype)[ids[:-1]]
    return Problem(row, weights, xs, ids[1:].astype(np.int64), dtype)


# --- the implementations: make(problem) -> step() -> (loss, {name: gradient ndarray}) ----------------------

def make_tinygrad(p):
    from tinygrad_rnn import nn
    r = p.row
    model = nn.RNN(r.V, r.d, r.V, dtype=p.dtype)
    params = [getattr(model, name) for name in PARAMS]
    for name, param in zip(PARAMS, params):
        param.data = p.weights[name].copy()
    xs, targets = p.xs, p.targets

    def step():
        for param in params:
            param.grad = None
        L, _ = model.loss(xs, targets)
        L.backward()
        return L.item(), {name: param.grad for name, param in zip(PARAMS, params)}
    return step


def _torch_tensors(p):
    import torch
    weights = [torch.tensor(p.weights[name], requires_grad=True) for name in PARAMS]
    return torch, weights, torch.from_numpy(p.xs), torch.from_numpy(p.targets)


def _torch_grads(weights):
    return {name: w.grad.numpy() for name, w in zip(PARAMS, weights)}


def make_torch_loop(p):
    torch, weights, X, Y = _torch_tensors(p)
    import torch.nn.functional as F
    U, W, b, V, c = weights
    h0 = torch.zeros(p.row.B, p.row.d, dtype=X.dtype)
    T = p.row.T

    def step():
        for w in weights:
            w.grad = None
        h, loss = h0, None
        for t in range(T):
            h = torch.tanh(X[t] @ U + h @ W + b)
            L_t = F.cross_entropy(h @ V + c, Y[t], reduction="sum")
            loss = L_t if loss is None else loss + L_t
        loss.backward()
        return loss.item(), _torch_grads(weights)
    return step


def make_torch_stacked(p):
    torch, weights, X, Y = _torch_tensors(p)
    import torch.nn.functional as F
    U, W, b, V, c = weights
    h0 = torch.zeros(p.row.B, p.row.d, dtype=X.dtype)
    T, targets = p.row.T, Y.reshape(-1)

    def step():
        for w in weights:
            w.grad = None
        h, logits = h0, []
        for t in range(T):
            h = torch.tanh(X[t] @ U + h @ W + b)
            logits.append(h @ V + c)
        loss = F.cross_entropy(torch.cat(logits), targets, reduction="sum")
        loss.backward()
        return loss.item(), _torch_grads(weights)
    return step


def make_torch_fused(p):
    import torch
    import torch.nn.functional as F
    r, dtype = p.row, getattr(torch, np.dtype(p.dtype).name)
    rnn = torch.nn.RNN(r.V, r.d, nonlinearity="tanh", dtype=dtype)
    out_layer = torch.nn.Linear(r.d, r.V, dtype=dtype)
    w = {name: torch.from_numpy(value) for name, value in p.weights.items()}
    with torch.no_grad():  # torch keeps weights as (out, in): ours transposed; one bias is enough
        rnn.weight_ih_l0.copy_(w["U"].T)
        rnn.weight_hh_l0.copy_(w["W"].T)
        rnn.bias_ih_l0.copy_(w["b"])
        rnn.bias_hh_l0.zero_()
        out_layer.weight.copy_(w["V"].T)
        out_layer.bias.copy_(w["c"])
    params = list(rnn.parameters()) + list(out_layer.parameters())
    X, targets = torch.from_numpy(p.xs), torch.from_numpy(p.targets).reshape(-1)
    h0 = torch.zeros(1, r.B, r.d, dtype=dtype)

    def step():
        for q in params:
            q.grad = None
        states, _ = rnn(X, h0)
        loss = F.cross_entropy(out_layer(states.reshape(-1, r.d)), targets, reduction="sum")
        loss.backward()
        return loss.item(), {"U": rnn.weight_ih_l0.grad.numpy().T, "W": rnn.weight_hh_l0.grad.numpy().T,
                             "b": rnn.bias_ih_l0.grad.numpy(), "V": out_layer.weight.grad.numpy().T,
                             "c": out_layer.bias.grad.numpy()}
    return step


def make_numpy_minchar(p):
    """Karpathy's min-char-rnn, batched: every op of the forward and of the backward inside the time loop."""
    U, W, b, V, c = (p.weights[name] for name in PARAMS)
    xs, targets, (B, T, d) = p.xs, p.targets, (p.row.B, p.row.T, p.row.d)
    batch = np.arange(B)

    def step():
        states, probs, loss = [np.zeros((B, d), dtype=p.dtype)], [], 0.0
        for t in range(T):
            s = np.tanh(xs[t] @ U + states[-1] @ W + b)
            y = s @ V + c
            e = np.exp(y - y.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            loss -= np.log(prob[batch, targets[t]]).sum()
            states.append(s)
            probs.append(prob)
        dU, dW, db, dV, dc = (np.zeros_like(w) for w in (U, W, b, V, c))
        ds_next = np.zeros((B, d), dtype=p.dtype)
        for t in reversed(range(T)):
            dy = probs[t].copy()
            dy[batch, targets[t]] -= 1                     # softmax + CE: p − onehot
            dV += states[t + 1].T @ dy
            dc += dy.sum(axis=0)
            da = (dy @ V.T + ds_next) * (1 - states[t + 1] ** 2)
            db += da.sum(axis=0)
            dU += xs[t].T @ da
            dW += states[t].T @ da
            ds_next = da @ W.T
        return float(loss), {"U": dU, "W": dW, "b": db, "V": dV, "c": dc}
    return step


def make_numpy_hoisted(p):
    """Only the recurrence (s W forward, δ Wᵀ backward) in the loops; all else one op over T·B rows."""
    U, W, b, V, c = (p.weights[name] for name in PARAMS)
    B, T, d, k = p.row.B, p.row.T, p.row.d, p.row.V
    X = p.xs.reshape(T * B, k)
    rows, picked = np.arange(T * B), p.targets.reshape(-1)
    WT, VT = W.T.copy(), V.T.copy()

    def step():
        S = np.empty((T + 1, B, d), dtype=p.dtype)
        S[0] = 0
        XU = (X @ U + b).reshape(T, B, d)
        for t in range(T):
            np.tanh(XU[t] + S[t] @ W, out=S[t + 1])
        states = S[1:].reshape(T * B, d)
        Y = states @ V + c
        Y -= Y.max(axis=1, keepdims=True)
        E = np.exp(Y)
        Z = E.sum(axis=1, keepdims=True)
        loss = np.log(Z[:, 0]).sum() - Y[rows, picked].sum()
        dY = E / Z
        dY[rows, picked] -= 1
        dS = (dY @ VT).reshape(T, B, d)
        dA = np.empty((T, B, d), dtype=p.dtype)
        ds_next = np.zeros((B, d), dtype=p.dtype)
        for t in reversed(range(T)):
            s = S[t + 1]
            da = dA[t]
            np.add(dS[t], ds_next, out=da)
            da *= 1 - s * s
            ds_next = da @ WT
        dA = dA.reshape(T * B, d)
        grads = {"U": X.T @ dA, "W": S[:-1].reshape(T * B, d).T @ dA, "b": dA.sum(axis=0),
                 "V": states.T @ dY, "c": dY.sum(axis=0)}
        return float(loss), grads
    return step


def make_matmul_floor(p):
    """The matmuls of numpy_hoisted alone, into preallocated buffers: no engine can do less BLAS work.
    The recurrent inputs are fixed arrays (no tanh in between, so no chain that could underflow)."""
    B, T, d, k = p.row.B, p.row.T, p.row.d, p.row.V
    rng = np.random.default_rng(1)
    U, W, V = p.weights["U"], p.weights["W"], p.weights["V"]
    WT, VT = W.T.copy(), V.T.copy()
    X = p.xs.reshape(T * B, k)
    S = rng.uniform(-1, 1, (T + 1, B, d)).astype(p.dtype)
    dA = rng.uniform(-1, 1, (T, B, d)).astype(p.dtype)
    dY = rng.uniform(-1, 1, (T * B, k)).astype(p.dtype)
    states, previous, dA2 = S[1:].reshape(T * B, d), S[:-1].reshape(T * B, d), dA.reshape(T * B, d)
    XU, Y, dS = (np.empty((T * B, n), dtype=p.dtype) for n in (d, k, d))
    tmp = np.empty((B, d), dtype=p.dtype)
    dU, dW, dV = (np.empty(shape, dtype=p.dtype) for shape in (U.shape, W.shape, V.shape))

    def step():
        np.matmul(X, U, out=XU)
        for t in range(T):
            np.matmul(S[t], W, out=tmp)
        np.matmul(states, V, out=Y)
        np.matmul(states.T, dY, out=dV)
        np.matmul(dY, VT, out=dS)
        for t in range(T):
            np.matmul(dA[t], WT, out=tmp)
        np.matmul(previous.T, dA2, out=dW)
        np.matmul(X.T, dA2, out=dU)
        return float("nan"), {}
    return step


@dataclass(frozen=True)
class Implementation:
    key: str
    label: str
    make: object
    uses_torch: bool = False
    checked: bool = True     # part of the float64 equality check
    memory: str = "tracemalloc"


IMPLEMENTATIONS = [
    Implementation("tinygrad", "tinygrad_rnn (nn.RNN, copies on)", make_tinygrad),
    Implementation("torch_loop", "torch autograd loop, CE per step", make_torch_loop, True, memory="profiler"),
    Implementation("torch_stacked", "torch autograd loop, CE stacked", make_torch_stacked, True, memory="profiler"),
    Implementation("torch_fused", "torch.nn.RNN + Linear", make_torch_fused, True, memory="profiler"),
    Implementation("numpy_minchar", "numpy BPTT, per step (min-char-rnn)", make_numpy_minchar),
    Implementation("numpy_hoisted", "numpy BPTT, hoisted", make_numpy_hoisted),
    Implementation("matmul_floor", "numpy matmul floor, hoisted (timed)", make_matmul_floor, checked=False,
                   memory=None),
]
BY_KEY = {impl.key: impl for impl in IMPLEMENTATIONS}


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def available_implementations():
    have_torch = torch_available()
    return [impl for impl in IMPLEMENTATIONS if have_torch or not impl.uses_torch]


# --- correctness first --------------------------------------------------------------------------------------

class MismatchError(AssertionError):
    pass


def check_implementations(row, implementations=None, reference="numpy_minchar", seed=0, rtol=1e-9):
    """Run every checked implementation once in float64 on the same problem and assert that loss and the
    five gradients equal the reference's. Returns {key: largest relative difference}."""
    implementations = [i for i in (implementations or available_implementations()) if i.checked]
    p = make_problem(row, np.float64, seed)
    ref_loss, ref_grads = BY_KEY[reference].make(p)()
    worst = {}
    for impl in implementations:
        loss, grads = impl.make(p)()
        errors = [abs(loss - ref_loss) / max(1.0, abs(ref_loss))]
        for name in PARAMS:
            g, r = np.asarray(grads[name]), ref_grads[name]
            if g.shape != r.shape:
                raise MismatchError(f"{impl.key} row {row.label}: ∂L/∂{name} has shape {g.shape}, "
                                    f"{reference} gives {r.shape}")
            errors.append(float(np.abs(g - r).max() / max(1.0, np.abs(r).max())))
        worst[impl.key] = max(errors)
        if worst[impl.key] > rtol:
            raise MismatchError(f"{impl.key} row {row.label}: loss/gradients differ from {reference} by "
                                f"{worst[impl.key]:.2e} (relative, float64; allowed {rtol:.0e})")
    return worst


# --- timing --------------------------------------------------------------------------------------------------

def time_steps(steps, min_time=1.0, min_repeats=5, burst=0.1, warmup=2):
    """{key: step} → {key: [seconds per call]}. Implementations take turns in bursts of ~`burst` seconds
    (so machine noise spreads over all of them) until each has run `min_repeats` times and `min_time`
    seconds. The garbage collector runs between bursts, never inside a timed call's bookkeeping."""
    burst = min(burst, min_time / 5)
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {key: [] for key in steps}
    while True:
        pending = [key for key, ts in times.items() if len(ts) < min_repeats or sum(ts) < min_time]
        if not pending:
            return times
        for key in pending:
            gc.collect()
            step, spent = steps[key], 0.0
            while True:  # at least one call per burst
                t0 = time.perf_counter()
                step()
                dt = time.perf_counter() - t0
                times[key].append(dt)
                spent += dt
                if spent >= burst:
                    break


def sgemm_gflops(n=1024, repeats=10):
    """numpy float32 matmul GFLOP/s at n×n×n, best of `repeats`: the machine's BLAS peak as numpy sees it."""
    a = np.random.default_rng(0).uniform(-1, 1, (n, n)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- memory --------------------------------------------------------------------------------------------------

def peak_memory(impl, step):
    """Peak bytes allocated during one call of step, above what was allocated before it.

    numpy and tinygrad_rnn: tracemalloc (numpy reports its array buffers to it; Python objects — graph nodes,
    closures — count too). torch: the profiler's per-op allocator events (self_cpu_memory_usage), summed in
    time order; it sees tensor storage only, not autograd's C++ graph nodes, and resolves per op."""
    gc.collect()
    if impl.memory == "tracemalloc":
        import tracemalloc
        tracemalloc.start()
        try:
            out = step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del out
        return peak
    if impl.memory == "profiler":
        from torch.profiler import ProfilerActivity, profile
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = step()
        del out
        changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                         if e.self_cpu_memory_usage)
        current = peak = 0
        for _, change in changes:
            current += change
            peak = max(peak, current)
        return peak
    return None


def peak_rss_delta(key, row, timeout=600):
    """Growth of peak resident memory during one step, in a fresh Python process: the same yardstick for
    every implementation (it counts everything — arrays, Python objects, torch's C++ graph, allocator
    slack — at page resolution; code paths are warmed up on a tiny row first, so the delta is the step's
    memory, not library loading). Linux: peak mark reset, then VmHWM − VmRSS; None where it fails."""
    code = ("import sys; from benchmarks.bench_bptt import _rss_child; "
            f"_rss_child({key!r}, {row.B}, {row.T}, {row.d}, {row.V}, {blas_info().get('threads')!r})")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              timeout=timeout)
        return int(done.stdout.split()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _rss_child(key, B, T, d, V, threads=None):
    impl = BY_KEY[key]
    if threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")
    if impl.uses_torch:
        import torch
        torch.set_num_threads(threads or blas_info().get("threads") or 1)
    impl.make(make_problem(Row(1, 2, 4, 4)))()              # load and warm every code path on a tiny row
    step = impl.make(make_problem(Row(B, T, d, V)))
    gc.collect()
    before = _reset_peak_rss()
    step()
    print(_peak_rss() - before)


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: /proc/self/clear_refs, value 5) and return
    the current RSS in bytes. Elsewhere the peak so far (ru_maxrss), which the step must exceed to show."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status("VmRSS")
    except OSError:
        return _peak_rss()


def _peak_rss():
    try:
        return _proc_status("VmHWM")  # this process image's own peak (ru_maxrss carries the parent's over exec)
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


class _quiet_stderr:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) for the duration of a block."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False


# --- other processes on the machine -------------------------------------------------------------------

class CpuMeter:
    """How many cores other processes kept busy while a block ran: /proc/stat busy time minus our own
    CPU time, over the wall time (Linux; `others` is None elsewhere). A benchmark on a shared 2-core machine
    is only as good as this number is small."""

    def __enter__(self):
        self._start = (_busy_seconds(), _own_cpu_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        busy, own, wall = self._start
        busy_now = _busy_seconds()
        self.others = None if busy is None else max(0.0, ((busy_now - busy) - (_own_cpu_seconds() - own))
                                                    / (time.perf_counter() - wall))
        return False


def _busy_seconds():
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def wait_until_quiet(max_wait, threshold=0.2, log=print):
    """Wait (≤ max_wait seconds) until other processes use < `threshold` cores over one second.
    Returns the last measured load of other processes (cores), or None where it cannot be measured."""
    deadline, said = time.perf_counter() + max_wait, False
    while True:
        with CpuMeter() as meter:
            time.sleep(1.0)
        if meter.others is None or meter.others < threshold or time.perf_counter() >= deadline:
            return meter.others
        if not said:
            log(f"other processes keep {meter.others:.1f} cores busy: waiting up to {max_wait:.0f} s for quiet")
            said = True


# --- per-op overhead ----------------------------------------------------------------------------------------

def op_overhead(n_forward=20000, chain=2000, repeats=5):
    """µs per recorded (4,4) float32 op forward, and per node in backward, for tinygrad_rnn and torch.

    Forward: one op on inputs that require grad, result dropped (recording + freeing). Backward: a chain of
    `chain` such ops, timed root.backward(ones) / chain (walk + accumulation, the shared input included).
    Returns a list of dicts {op, numpy_us, tinygrad_fwd_us, tinygrad_bwd_us, torch_fwd_us, torch_bwd_us}."""
    from tinygrad_rnn import Parameter, Tensor, Unroll
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.uniform(-0.5, 0.5, (4, 4)).astype(np.float32) for _ in range(2))
    ops = {"add": (lambda x, y: x + y, np.add), "tanh": (lambda x, y: x.tanh(), np.tanh),
           "matmul": (lambda x, y: x @ y, np.matmul)}
    have_torch = torch_available()
    if have_torch:
        import torch
        torch_ops = {"add": lambda x, y: x + y, "tanh": lambda x, y: torch.tanh(x), "matmul": lambda x, y: x @ y}

    def per_call(fn, n):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n)
        return best * 1e6

    def per_node_backward(build, backward):
        best = float("inf")
        for _ in range(repeats):
            root = build()
            gc.disable()  # no collector pass inside the timed walk, for either engine
            try:
                t0 = time.perf_counter()
                backward(root)
                best = min(best, (time.perf_counter() - t0) / chain)
            finally:
                gc.enable()
            del root
        return best * 1e6

    rows = []
    for name, (op, np_op) in ops.items():
        a, b = Parameter(a_np.copy()), Parameter(b_np.copy())
        entry = {"op": name, "numpy_us": per_call(lambda: np_op(a_np, b_np) if np_op is not np.tanh
                                                  else np_op(a_np), n_forward)}
        entry["tinygrad_fwd_us"] = per_call(lambda: op(a, b), n_forward)

        def build_tg():
            y = Tensor(a_np.copy(), requires_grad=True)
            for _ in range(chain):
                y = op(y, b)
            return y
        entry["tinygrad_bwd_us"] = per_node_backward(build_tg, lambda y: y.backward(np.ones((4, 4), np.float32)))
        if have_torch:
            top = torch_ops[name]
            ta = torch.tensor(a_np, requires_grad=True)
            tb = torch.tensor(b_np, requires_grad=True)
            entry["torch_fwd_us"] = per_call(lambda: top(ta, tb), n_forward)

            def build_torch():
                y = torch.tensor(a_np, requires_grad=True)
                for _ in range(chain):
                    y = top(y, tb)
                return y
            entry["torch_bwd_us"] = per_node_backward(build_torch, lambda y: y.backward(torch.ones(4, 4)))
        entry.update(n_forward=n_forward, chain=chain, repeats=repeats)
        rows.append(entry)
    # the RNN's case: a shared weight used inside an Unroll step is replaced by its copy W(t)
    x, W = Tensor(a_np.copy(), requires_grad=True), Parameter(b_np.copy(), name="W")
    tape = Unroll(shared=[W])
    with tape.step(1):
        fwd = per_call(lambda: x @ W, n_forward)
    rows.append({"op": "matmul with W(t) (in Unroll.step)", "numpy_us": None, "tinygrad_fwd_us": fwd})
    return rows


# --- profiling -----------------------------------------------------------------------------------------------

def profile_tinygrad(row, repeats=3, top=30):
    """cProfile of `repeats` tinygrad_rnn steps (float32) at `row`: the text of pstats, by own time."""
    import cProfile
    import io
    import pstats
    step = make_tinygrad(make_problem(row, np.float32))
    step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        step()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


# --- the environment ----------------------------------------------------------------------------------------

def blas_info():
    """numpy's BLAS as threadpoolctl sees it: {library, version, kernel, threads}, or {} without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    numpy_dir = os.path.dirname(np.__file__)
    site = os.path.dirname(numpy_dir)
    for info in threadpool_info():
        if info.get("user_api") == "blas" and (info["filepath"].startswith(site + os.sep + "numpy")
                                               or "numpy" in os.path.basename(os.path.dirname(info["filepath"]))):
            return {"library": info.get("internal_api"), "version": info.get("version"),
                    "kernel": info.get("architecture"), "threads": info.get("num_threads"),
                    "filepath": info.get("filepath")}
    for info in threadpool_info():  # numpy linked some other way: first BLAS found
        if info.get("user_api") == "blas":
            return {"library": info.get("internal_api"), "version": info.get("version"),
                    "kernel": info.get("architecture"), "threads": info.get("num_threads"),
                    "filepath": info.get("filepath")}
    return {}


def configure_torch(threads):
    """torch.set_num_threads(threads): the same thread count as numpy's BLAS. Returns a description."""
    import torch
    torch.set_num_threads(threads)
    config = torch.__config__.show()
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    for line in config.splitlines():
        if "Math Kernel Library" in line or "oneMKL" in line:
            mkl = line.strip().lstrip("- ")
            break
    return {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "blas": mkl}


def engine_fingerprint():
    """sha1 (12 hex digits) of the engine's source files as imported: names the engine version measured,
    also in an uncommitted working tree."""
    import hashlib
    import tinygrad_rnn
    digest = hashlib.sha1()
    for path in sorted(Path(tinygrad_rnn.__file__).resolve().parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def environment():
    """Machine, versions, BLAS kernel, threads and the OpenBLAS environment variables (read, never set)."""
    import tinygrad_rnn
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            memory = int(f.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "engine_sha1": engine_fingerprint(),
            "memory_gib": memory, "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "tinygrad_rnn": tinygrad_rnn.__version__, "commit": commit,
            "blas": blas_info(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}


# --- targets of issue 7 -----------------------------------------------------------------------------------

def targets(row, median):
    """[(text, met)] for this row: the issue's targets, each with the measured ratio."""
    tg, out = median.get("tinygrad"), []
    if tg is None:
        return out

    def ratio(key, limit, what):
        if median.get(key):
            r = tg / median[key]
            out.append((f"≤{limit:g}× {what}: {r:.2f}×", r <= limit))
    if row.B == 1:
        ratio("torch_loop", 0.5, "torch loop")
        ratio("torch_fused", 1.0, "nn.RNN")
    if row.d >= 512 and row.B >= 32:
        ratio("torch_stacked", 1.1, "torch stacked")
        if median.get("matmul_floor"):
            share = median["matmul_floor"] / tg
            out.append((f"≥60% of matmul floor: {100 * share:.0f}%", share >= 0.6))
    if median.get("numpy_minchar"):
        r = tg / median["numpy_minchar"]
        out.append((f"<1× min-char: {r:.2f}×", r < 1))
    if row.B >= 32:
        ratio("numpy_hoisted", 1.5, "hoisted")
    return out


# --- the run -------------------------------------------------------------------------------------------------

def run_benchmark(rows=GRID, check=True, min_time=1.0, min_repeats=5, memory=True, overhead=True,
                  implementations=None, wait_quiet=0.0, rss=True, overhead_sizes=None, threads=None, log=print):
    """Check, time and measure every implementation on every row. Returns the results dict that
    `markdown`, `write_chart` and `write_json` turn into files.

    memory: tracemalloc / torch-profiler peaks ("tracemalloc": numpy and tinygrad_rnn only, no profiler runs),
    and with rss=True the peak-RSS growth in a fresh process per implementation. wait_quiet: seconds to wait, before each row, for other processes to go quiet.
    overhead_sizes: keyword arguments for `op_overhead` (smaller loops for a quick run).
    threads: BLAS threads for numpy (set at run time through threadpoolctl, restored afterwards) and torch;
    None keeps numpy's (torch then gets the same count)."""
    if threads is not None:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=threads, user_api="blas"):
            results = run_benchmark(rows, check, min_time, min_repeats, memory, overhead, implementations,
                                    wait_quiet, rss, overhead_sizes, None, log)
        results["settings"]["threads"] = threads
        return results
    implementations = implementations or available_implementations()
    env = environment()
    threads = env["blas"].get("threads") or 1
    if any(impl.uses_torch for impl in implementations):
        env["torch"] = configure_torch(threads)
    if env["openblas_env"]:
        log(f"warning: {env['openblas_env']} is set: numpy's BLAS loaded with it (kernel "
            f"{env['blas'].get('kernel')}); run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to measure "
            "the kernel the CPU would pick")
    env["sgemm_gflops"] = sgemm_gflops(repeats=10 if min_time >= 0.5 else 2)
    log(f"numpy BLAS: {env['blas'].get('library')} {env['blas'].get('version')} kernel {env['blas'].get('kernel')}, "
        f"{threads} threads, sgemm {env['sgemm_gflops']:.0f} GFLOP/s; torch threads "
        f"{env.get('torch', {}).get('threads', '-')}")
    results = {"environment": env, "settings": {"min_time": min_time, "min_repeats": min_repeats, "check": check},
               "implementations": {i.key: i.label for i in implementations}, "rows": []}
    started = time.perf_counter()
    for row in rows:
        entry = {"row": [row.B, row.T, row.d, row.V], "label": row.label, "flops": row.flops}
        if check:
            entry["check"] = check_implementations(row, implementations)
            log(f"{row.label}: float64 loss and gradients agree (worst relative difference "
                f"{max(entry['check'].values()):.1e})")
        problem = make_problem(row, np.float32)
        steps = {impl.key: impl.make(problem) for impl in implementations}
        if wait_quiet:
            wait_until_quiet(wait_quiet, log=log)
        # the machine's peak is the best sgemm rate seen: measured again at every row, after any wait
        env["sgemm_gflops"] = max(env["sgemm_gflops"], sgemm_gflops(repeats=5 if min_time >= 0.5 else 1))
        with CpuMeter() as meter:
            times = time_steps(steps, min_time=min_time, min_repeats=min_repeats)
        entry["others_cores"] = meter.others
        entry["median_s"] = {k: statistics.median(ts) for k, ts in times.items()}
        entry["min_s"] = {k: min(ts) for k, ts in times.items()}
        entry["repeats"] = {k: len(ts) for k, ts in times.items()}
        entry["targets"] = targets(row, entry["median_s"])
        if memory:
            kinds = ("tracemalloc", "profiler") if memory != "tracemalloc" else ("tracemalloc",)
            entry["peak_bytes"] = {impl.key: peak_memory(impl, steps[impl.key]) for impl in implementations
                                   if impl.memory in kinds}
            if rss:
                entry["rss_bytes"] = {impl.key: peak_rss_delta(impl.key, row) for impl in implementations
                                      if impl.memory}
        results["rows"].append(entry)
        log(f"{row.label}: " + ", ".join(f"{k} {1e3 * v:.3g} ms" for k, v in entry["median_s"].items())
            + ("" if meter.others is None else f" (other processes: {meter.others:.2f} cores)"))
        del steps, problem
    for entry in results["rows"]:
        entry["flop_floor_s"] = entry["flops"] / (env["sgemm_gflops"] * 1e9)
    if overhead:
        if wait_quiet:
            wait_until_quiet(wait_quiet, log=log)
        with CpuMeter() as meter:
            results["overhead"] = op_overhead(**(overhead_sizes or {}))
        results["overhead_others_cores"] = meter.others
    results["elapsed_s"] = time.perf_counter() - started
    return results


# --- output ---------------------------------------------------------------------------------------------------

def _ms(seconds):
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _mib(n):
    return "—" if n is None else f"{n / 2 ** 20:.3g}"


def markdown(results):
    """The results as markdown: header (machine, versions, BLAS, threads), times, ratios, memory, overhead."""
    env, rows = results["environment"], results["rows"]
    keys = list(results["implementations"])
    blas, tor = env.get("blas", {}), env.get("torch")
    lines = ["# One BPTT training step: tinygrad_rnn vs PyTorch autograd vs hand-written numpy", ""]
    lines.append(f"- {env['date']} · {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB · {env['platform']}")
    lines.append(f"- Python {env['python']}, numpy {env['numpy']}, tinygrad_rnn {env['tinygrad_rnn']}"
                 f" (git {env['commit']}, engine sources sha1 {env.get('engine_sha1')})"
                 + (f", torch {tor['version']}" if tor else ", torch not installed"))
    lines.append(f"- numpy BLAS (threadpoolctl): {blas.get('library')} {blas.get('version')}, kernel "
                 f"**{blas.get('kernel')}**, {blas.get('threads')} threads"
                 + (" (set by `--threads` through threadpoolctl)" if results["settings"].get("threads") else "")
                 + "; sgemm 1024³ "
                 f"{env['sgemm_gflops']:.0f} GFLOP/s (best seen during the run)")
    if tor:
        lines.append(f"- torch: {tor['blas']}; `torch.set_num_threads({tor['threads']})` = numpy's BLAS thread "
                     f"count from threadpoolctl (interop threads {tor['interop_threads']})")
    openblas = env["openblas_env"]
    lines.append("- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: " + (
        "unset (run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`)" if not openblas else
        f"**set to {openblas}** — numpy's BLAS was forced to that kernel; these are not this CPU's best times"))
    s = results["settings"]
    lines.append(f"- One step = forward + ∂L/∂(U, W, b, V, c), float32, one-hot inputs, L = Σ_t Σ_batch CE. "
                 f"Median (min) ms over ≥{s['min_repeats']} calls and ≥{s['min_time']:g} s per implementation, "
                 "implementations taking turns in ~0.1 s bursts, after 2 warm-up calls; gc on "
                 "(collected between bursts).")
    if s["check"]:
        lines.append("- Checked first on every row (float64, same weights and data): loss and all five gradients "
                     "of every implementation equal the numpy min-char-rnn reference (worst relative difference "
                     f"{max(max(r['check'].values()) for r in rows):.1e}).")
    lines.append(f"- Load average at start {tuple(round(x, 2) for x in env['load_average'] or ())}; "
                 f"total run {results.get('elapsed_s', 0):.0f} s.")
    labels = {"tinygrad": "tinygrad_rnn", "torch_loop": "torch loop, CE/step", "torch_stacked": "torch loop, CE "
              "stacked", "torch_fused": "torch.nn.RNN + Linear", "numpy_minchar": "numpy min-char-rnn",
              "numpy_hoisted": "numpy hoisted", "matmul_floor": "numpy matmul floor"}
    lines += ["", "## Time of one step, ms: median (min)", "",
              "| (B,T,d,V) | " + " | ".join(labels[k] for k in keys) + " | FLOP floor | other processes |",
              "|---|" + "--:|" * (len(keys) + 2)]
    for r in rows:
        cells = [f"{_ms(r['median_s'][k])} ({_ms(r['min_s'][k])})" for k in keys]
        gflops = r["flops"] / r["median_s"]["tinygrad"] / 1e9 if "tinygrad" in keys else None
        if gflops is not None:
            cells[0] += f" [{gflops:.3g} GF/s]"
        others = r.get("others_cores")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {_ms(r['flop_floor_s'])} | "
                     + ("—" if others is None else f"{others:.2f} cores") + " |")
    lines.append("")
    lines.append("FLOP floor = 2TB(5Vd + 3d²) FLOPs at the sgemm rate above. [GF/s] = tinygrad_rnn's achieved "
                 "matmul GFLOP/s. Other processes = cores kept busy by the rest of the machine while the row was "
                 "timed (/proc/stat minus this process): above ~0.2 the row's times are inflated, torch's the most "
                 "(its OpenMP threads wait at barriers for descheduled siblings).")
    if "tinygrad" in keys:
        ref_keys = [k for k in keys if k != "tinygrad"]
        lines += ["", "## tinygrad_rnn relative to each: time ÷ time of medians (of mins); < 1 is faster", "",
                  "Targets of issue 7 are judged on medians.", "",
                  "| (B,T,d,V) | " + " | ".join("÷ " + labels[k] for k in ref_keys) + " | target / met? |",
                  "|---|" + "--:|" * len(ref_keys) + "---|"]
        for r in rows:
            med = r["median_s"]
            low = r["min_s"]
            cells = [f"{med['tinygrad'] / med[k]:.2f} ({low['tinygrad'] / low[k]:.2f})" for k in ref_keys]
            goals = "; ".join(f"{text} {'✅' if met else '❌'}" for text, met in r["targets"]) or "—"
            lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {goals} |")
    if any("peak_bytes" in r for r in rows):
        mem_keys = [k for k in keys if BY_KEY.get(k) is None or BY_KEY[k].memory]
        lines += ["", "## Peak memory of one step, MiB (and ÷ T·B·d·4 bytes, one float32 state per step)", "",
                  "| (B,T,d,V) | " + " | ".join(labels[k] for k in mem_keys) + " | tinygrad ÷ torch loop |",
                  "|---|" + "--:|" * (len(mem_keys) + 1)]
        for r in rows:
            peak, unit = r["peak_bytes"], r["row"][0] * r["row"][1] * r["row"][2] * 4
            cells = [f"{_mib(peak[k])} ({peak[k] / unit:.3g})" if peak.get(k) is not None else "—" for k in mem_keys]
            versus = (f"{peak['tinygrad'] / peak['torch_loop']:.2f}"
                      if peak.get("tinygrad") and peak.get("torch_loop") else "—")
            lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {versus} |")
        if any(r.get("rss_bytes") for r in rows):
            lines += ["", "### Same, measured as growth of peak RSS in a fresh process (VmHWM after resetting it), MiB", "",
                  "| (B,T,d,V) | " + " | ".join(labels[k] for k in mem_keys) + " | tinygrad ÷ torch loop |",
                      "|---|" + "--:|" * (len(mem_keys) + 1)]
            for r in rows:
                rss = r.get("rss_bytes", {})
                versus = (f"{rss['tinygrad'] / rss['torch_loop']:.2f}"
                          if rss.get("tinygrad") and rss.get("torch_loop") else "—")
                lines.append(f"| {r['label']} | " + " | ".join(_mib(rss.get(k)) for k in mem_keys)
                             + f" | {versus} |")
        lines += ["", "numpy and tinygrad_rnn: tracemalloc peak during one call (array buffers and Python objects such "
                  "as graph nodes and closures, the returned gradients included). torch: the profiler's allocator "
                  "events (`profile_memory=True`, each op's self_cpu_memory_usage summed in time order): tensor "
                  "storage only, at op resolution; autograd's C++ graph nodes are not counted, so torch's figure "
                  "is a lower bound. The RSS table measures everyone the same way (every allocation, at page "
                  "resolution, after warming code paths on a tiny row): below a few MiB it is mostly allocator "
                  "noise (glibc reuses freed pages, so 0 means 'fits in memory already touched')."]
    if results.get("overhead"):
        lines += ["", "## Per-op overhead, (4,4) float32, µs (target ≤ 1 µs forward and backward)", "",
                  "| op | numpy | tinygrad_rnn forward | tinygrad_rnn backward / node | torch forward | "
                  "torch backward / node |", "|---|--:|--:|--:|--:|--:|"]
        fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        for o in results["overhead"]:
            lines.append(f"| {o['op']} | {fmt(o.get('numpy_us'))} | {fmt(o.get('tinygrad_fwd_us'))} | "
                         f"{fmt(o.get('tinygrad_bwd_us'))} | {fmt(o.get('torch_fwd_us'))} | "
                         f"{fmt(o.get('torch_bwd_us'))} |")
        o = results["overhead"][0]
        lines += ["", "Forward: one op on inputs that require grad, result dropped (record + free), best of "
                  f"{o.get('repeats')} × {o.get('n_forward')}. Backward: a chain of {o.get('chain')} such ops (the "
                  "second input shared by all), root.backward(ones) ÷ chain length, best of "
                  f"{o.get('repeats')} (topological sort, walk and gradient sums included)."]
    return "\n".join(lines) + "\n"


def write_chart(results, path):
    """PNG: each implementation's time ÷ PyTorch autograd (loop, CE per step) and ÷ numpy hoisted, per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = sorted(results["rows"], key=lambda r: r["flops"])
    keys = list(results["implementations"])
    x = np.arange(len(rows))
    refs = [k for k in ("torch_loop", "numpy_hoisted") if k in keys]
    fig, axes = plt.subplots(1, len(refs), figsize=(6.5 * len(refs), 4.8), squeeze=False)
    for ax, ref in zip(axes[0], refs):
        for key in keys:
            ratios = [r["median_s"][key] / r["median_s"][ref] for r in rows]
            style = dict(linewidth=2.8, color="black", zorder=3) if key == "tinygrad" else dict(linewidth=1.2)
            ax.plot(x, ratios, marker="o", label=results["implementations"][key], **style)
        ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{r['label']}\n{r['flops'] / 1e6:.3g} MFLOP" for r in rows], fontsize=7)
        ax.set_ylabel(f"time ÷ {results['implementations'][ref]}")
        ax.set_title(f"relative to {results['implementations'][ref]}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    env = results["environment"]
    fig.suptitle(f"One BPTT step (B,T,d,V), float32 — numpy BLAS {env['blas'].get('kernel')} "
                 f"{env['blas'].get('threads')} threads, {env['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(results, path):
    Path(path).write_text(json.dumps(results, indent=1, default=str))


def write_results(results, out_dir, stem="bptt", chart=True):
    """Write `<stem>.md`, `<stem>.json` and (chart=True) `<stem>.png` into out_dir; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.json"]
    paths[0].write_text(markdown(results))
    write_json(results, paths[1])
    if chart:
        paths.append(out_dir / f"{stem}.png")
        write_chart(results, paths[2])
    return paths


if __name__ == "__main__":
    from .cli import main
    sys.exit(main())
