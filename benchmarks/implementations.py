"""The implementations of one BPTT training step, all on the same `Problem` (weights, one-hot data, targets).

Each `make_*(problem)` returns `step()`, which runs forward + backward once and returns
`(loss, {"U": dU, "W": dW, "b": db, "V": dV, "c": dc})` as numpy arrays (the matmul floor returns no gradients).
The optional peers (jax, HIPS autograd, MyGrad) live in peers.py; `IMPLEMENTATIONS` lists them all.
"""
from dataclasses import dataclass

import numpy as np

from . import peers

PARAMS = ("U", "W", "b", "V", "c")


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

def _tinygrad_model(p):
    from tinygrad_rnn import nn
    r = p.row
    model = nn.RNN(r.V, r.d, r.V, dtype=p.dtype)
    params = [getattr(model, name) for name in PARAMS]
    for name, param in zip(PARAMS, params):
        param.data = p.weights[name].copy()
    return model, params


def make_tinygrad(p):
    model, params = _tinygrad_model(p)
    xs, targets = p.xs, p.targets

    def step():
        for param in params:
            param.grad = None
        L, _ = model.loss(xs, targets)
        L.backward()
        return L.item(), {name: param.grad for name, param in zip(PARAMS, params)}
    return step


def make_tinygrad_replayed(p):
    """The same step through tinygrad_rnn.replay: recorded at the first call, replayed at every later one."""
    from tinygrad_rnn.replay import Replay
    model, params = _tinygrad_model(p)
    train_step = Replay(model.loss)
    xs, targets = p.xs, p.targets

    def step():
        for param in params:
            param.grad = None
        L, _ = train_step(xs, targets)
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
    label: str               # what it is, for the report's notes
    make: object
    uses_torch: bool = False
    checked: bool = True     # part of the float64 equality check
    memory: str = "tracemalloc"
    short: str = ""          # column heading
    requires: tuple = ()     # modules an optional peer needs: skipped with a note when one is missing


IMPLEMENTATIONS = [
    Implementation("tinygrad", "tinygrad_rnn (nn.RNN, copies on)", make_tinygrad, short="tinygrad_rnn"),
    Implementation("tinygrad_replayed", "tinygrad_rnn (nn.RNN, copies on), replayed (tinygrad_rnn.replay)",
                   make_tinygrad_replayed, short="tinygrad_rnn replayed"),
    Implementation("torch_loop", "torch autograd loop, CE per step", make_torch_loop, True, memory="profiler",
                   short="torch loop, CE/step", requires=("torch",)),
    Implementation("torch_stacked", "torch autograd loop, CE stacked", make_torch_stacked, True, memory="profiler",
                   short="torch loop, CE stacked", requires=("torch",)),
    Implementation("torch_fused", "torch.nn.RNN + Linear", make_torch_fused, True, memory="profiler",
                   short="torch.nn.RNN + Linear", requires=("torch",)),
    Implementation("numpy_minchar", "numpy BPTT, per step (min-char-rnn)", make_numpy_minchar,
                   short="numpy min-char-rnn"),
    Implementation("numpy_hoisted", "numpy BPTT, hoisted", make_numpy_hoisted, short="numpy hoisted"),
    Implementation("matmul_floor", "numpy matmul floor, hoisted (timed)", make_matmul_floor, checked=False,
                   memory=None, short="numpy matmul floor"),
    # optional peers (benchmarks/peers.py); jax's buffers live in XLA, where tracemalloc does not see them
    Implementation("jax_scan", "jax.jit(value_and_grad) of a jax.lax.scan loop", peers.make_jax_scan, memory=None,
                   short="jax.jit(lax.scan)", requires=("jax",)),
    Implementation("hips_autograd", "HIPS autograd value_and_grad, Python time loop", peers.make_hips_autograd,
                   short="HIPS autograd", requires=("autograd", "scipy")),
    Implementation("mygrad", "MyGrad tensors, Python time loop", peers.make_mygrad, short="MyGrad",
                   requires=("mygrad",)),
]
BY_KEY = {impl.key: impl for impl in IMPLEMENTATIONS}


def missing_modules(impl):
    """The modules of impl.requires that cannot be imported here (found without importing them)."""
    from importlib.util import find_spec
    return [name for name in impl.requires if find_spec(name) is None]


def torch_available():
    return not missing_modules(BY_KEY["torch_loop"])


def available_implementations():
    return [impl for impl in IMPLEMENTATIONS if not missing_modules(impl)]


def skipped_implementations():
    """{key: note} for the optional implementations that cannot run here, and why."""
    return {impl.key: f"skipped: {', '.join(missing_modules(impl))} not installed (pip install "
                      f"{' '.join(missing_modules(impl))})" for impl in IMPLEMENTATIONS if missing_modules(impl)}
