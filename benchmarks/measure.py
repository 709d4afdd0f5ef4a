"""Measuring on a shared machine: step timings, sgemm rate, peak memory, per-op overhead, how busy the rest
of the machine is, and what it is (BLAS kernel, threads, versions)."""
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .implementations import BY_KEY, Row, make_problem, torch_available

# --- timing --------------------------------------------------------------------------------------------------
#
# numpy's OpenBLAS and torch's OpenMP keep their worker threads spinning for a while after a call, and XLA has
# its own pool: an implementation timed right after another library's runs against busy threads on a 2-core
# machine. So each implementation is timed in its own block, after its own warm-up (which outlasts the previous
# library's spinning). A process is not a fair sample either: one fresh process can run 10-40 % slower than the
# next for its whole life, and the host slows everything now and then for a second or so. So the blocks run in
# rounds of fresh processes (`time_rounds`) and a time is the best round's median; as a check, every round also
# times each implementation in a fresh process of its own, where no other library is loaded at all.
# `time_interleaved` is the older scheme (turns of ~0.1 s), kept to show how much it disturbs.

WARMUP_S = 0.3  # warm-up per block: longer than OpenMP's and OpenBLAS's spin-wait after a call (~0.2 s at most)

# glibc's malloc hands memory back to the kernel when the top of the heap is free (trim) and serves blocks over
# its mmap threshold from fresh pages; both thresholds move with what the process freed before. So the same step
# page-faults (and zero-fills) every call in one process and not in another: numpy hoisted at (32,50,128,65)
# took 7.7 ms per step in a fresh process and 3.9 ms after any other implementation had run once (measured
# 2026-12-03). Timing therefore runs with both thresholds fixed — freed memory stays in the heap, blocks up to
# 32 MiB come from it — in the parent and in every timing child alike, for every library (torch's and XLA's CPU
# allocators are glibc's malloc too). MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ would do the same from the
# environment; mallopt() does it from inside, so `python -m benchmarks` needs no wrapper.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
STEADY_MALLOC = {"M_TRIM_THRESHOLD": 1 << 30, "M_MMAP_THRESHOLD": 32 << 20}  # 32 MiB is glibc's largest mmap threshold


def steady_allocator():
    """Fix glibc malloc's trim and mmap thresholds (`STEADY_MALLOC`) in this process, so a step's page faults
    do not depend on what ran before it. Returns the settings applied, or None where malloc is not glibc's."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_TRIM_THRESHOLD, STEADY_MALLOC["M_TRIM_THRESHOLD"])
            and mallopt(M_MMAP_THRESHOLD, STEADY_MALLOC["M_MMAP_THRESHOLD"])):
        return None
    return dict(STEADY_MALLOC)


def time_block(step, min_time=1.0, min_repeats=5, warmup_time=WARMUP_S, warmup_calls=2):
    """Seconds per call of step, timed in one block: gc.collect(), then ≥ warmup_calls calls and ≥ warmup_time
    seconds of warm-up (not timed), then calls until there are ≥ min_repeats of them and ≥ min_time seconds.
    The garbage collector stays on, as in a user's loop."""
    gc.collect()
    calls, warm_until = 0, time.perf_counter() + warmup_time
    while calls < warmup_calls or time.perf_counter() < warm_until:
        step()
        calls += 1
    times = []
    while len(times) < min_repeats or sum(times) < min_time:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def time_blocks(steps, min_time=1.0, min_repeats=5, warmup_time=WARMUP_S):
    """{key: step} → {key: [seconds per call]}, each implementation in its own block (`time_block`), in order."""
    return {key: time_block(step, min_time, min_repeats, warmup_time) for key, step in steps.items()}


def time_in_own_process(key, row, min_time=1.0, min_repeats=5, warmup_time=WARMUP_S, threads=None, timeout=900,
                        malloc=True):
    """The same block timing as `time_block`, in a fresh Python process that builds only this implementation
    (so no other library's threads exist there). [seconds per call], or None where the child fails."""
    times = _child_times(f"_timing_child({key!r}, {_row_args(row)}, {threads!r}, {min_time!r}, {min_repeats!r}, "
                         f"{warmup_time!r}, {malloc!r})", timeout)
    return times.get(key) if times else None


def time_in_shared_process(keys, row, min_time=1.0, min_repeats=5, warmup_time=WARMUP_S, threads=None,
                           timeout=1800, malloc=True):
    """Every implementation in `keys` built in one fresh Python process and timed there in its own block
    (`time_block`), in that order: {key: [seconds per call]}, or None where the child fails."""
    return _child_times(f"_shared_child({list(keys)!r}, {_row_args(row)}, {threads!r}, {min_time!r}, "
                        f"{min_repeats!r}, {warmup_time!r}, {malloc!r})", timeout)


def time_rounds(keys, row, rounds=5, own=True, min_time=1.0, min_repeats=5, warmup_time=WARMUP_S, threads=None,
                malloc=True):
    """Time the implementations `rounds` times, each round in fresh processes: one that builds them all and
    times each in its own block (the order turned by one place each round, so none always follows the same
    library), then — own=True — one per implementation, building only that one. Returns {"shared": {key:
    [[seconds per call] per round]}, "own": likewise or None}; a failed child leaves None for its round.

    Why rounds of fresh processes: on this machine one process can run 10–40 % slower than the next for its
    whole life (where its pages landed), and the host slows everything for a second now and then; neither shows
    in one process's timings. The best round's median (`best_round`) sees through both."""
    keys = list(keys)
    shared = {key: [] for key in keys}
    own_times = {key: [] for key in keys} if own else None
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
        times = time_in_shared_process(order, row, min_time, min_repeats, warmup_time, threads, malloc=malloc) or {}
        for key in keys:
            shared[key].append(times.get(key))
        if own:
            for key in order:
                own_times[key].append(time_in_own_process(key, row, min_time, min_repeats, warmup_time, threads,
                                                          malloc=malloc))
    return {"shared": shared, "own": own_times}


def round_medians(rounds):
    """[[seconds per call] or None per round] → [the round's median, or None where its process failed]."""
    return [statistics.median(times) if times else None for times in rounds]


def best_round(rounds):
    """[[seconds per call] or None per round] → the lowest of the rounds' medians: a busy host only ever slows
    a round down, so the best round is the one it disturbed least (None if no round ran)."""
    medians = [m for m in round_medians(rounds) if m is not None]
    return min(medians) if medians else None


def _row_args(row):
    return f"{row.B}, {row.T}, {row.d}, {row.V}"


def _child_times(call, timeout):
    """Run a timing child; its last stdout line is JSON {key: [seconds per call]}. None where it fails."""
    out = _run_child(call, timeout)
    try:
        times = json.loads(out.strip().splitlines()[-1]) if out and out.strip() else None
    except ValueError:
        return None
    return times if isinstance(times, dict) else None


def _timing_child(key, B, T, d, V, threads, min_time, min_repeats, warmup_time, malloc=True):
    _shared_child([key], B, T, d, V, threads, min_time, min_repeats, warmup_time, malloc)


def _shared_child(keys, B, T, d, V, threads, min_time, min_repeats, warmup_time, malloc=True):
    if malloc:
        steady_allocator()
    impls = [BY_KEY[key] for key in keys]
    _limit_threads(impls, threads)
    problem = make_problem(Row(B, T, d, V))
    steps = {impl.key: impl.make(problem) for impl in impls}
    print(json.dumps(time_blocks(steps, min_time, min_repeats, warmup_time)))


def time_interleaved(steps, min_time=1.0, min_repeats=5, burst=0.1, warmup=2):
    """{key: step} → {key: [seconds per call]}. Implementations take turns in bursts of ~`burst` seconds
    until each has run `min_repeats` times and `min_time` seconds (the harness's former scheme: each library
    then runs right after another's, against its still-spinning threads). gc runs between bursts."""
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
            step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak
    if impl.memory == "profiler":
        from torch.profiler import ProfilerActivity, profile
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
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
    out = _run_child(f"_rss_child({key!r}, {row.B}, {row.T}, {row.d}, {row.V}, {blas_info().get('threads')!r})",
                     timeout)
    try:
        return int(out.split()[-1]) if out else None
    except (ValueError, IndexError):
        return None


def _run_child(call, timeout):
    """Run `benchmarks.measure.<call>` in a fresh Python process (the checkout on its path, BLAS variables
    inherited): its stdout, or None if it failed or timed out."""
    code = f"from benchmarks.measure import _rss_child, _shared_child, _timing_child; {call}"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                              timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def child_env():
    """The environment of a benchmark child process: this one's, with the checkout first on PYTHONPATH."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _limit_threads(impls, threads):
    """In a child process: numpy's BLAS and torch get the parent's thread count."""
    if threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=threads, user_api="blas")
    if any(impl.uses_torch for impl in impls):
        import torch
        torch.set_num_threads(threads or blas_info().get("threads") or 1)


def _rss_child(key, B, T, d, V, threads=None):
    impl = BY_KEY[key]
    _limit_threads([impl], threads)
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
    """CPU seconds of this process and of its finished children (a timing child's work is ours, not noise)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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

    def numpy_backward(name):
        """The same chain's backward written in numpy (no graph): the math every engine must do per node.
        add: the shared input sums g; tanh: g·(1 − y²); matmul: the shared weight sums xᵀg and g·bᵀ flows on."""
        saved = [np.tanh(a_np) for _ in range(chain)] if name == "tanh" else [a_np.copy() for _ in range(chain)]
        best = float("inf")
        for _ in range(repeats):
            g, g_shared = np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)
            t0 = time.perf_counter()
            for y in reversed(saved):
                if name == "add":
                    g_shared = g_shared + g
                elif name == "tanh":
                    g = g * (1 - y * y)
                else:
                    g_shared = g_shared + y.T @ g
                    g = g @ b_np.T
            best = min(best, (time.perf_counter() - t0) / chain)
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
        entry["numpy_bwd_us"] = numpy_backward(name)
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
    plain = next(r for r in rows if r["op"] == "matmul")
    rows.append({"op": "matmul with W(t) (in Unroll.step)", "numpy_us": plain["numpy_us"], "tinygrad_fwd_us": fwd})
    return rows


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


def peer_versions():
    """{distribution: version} of the optional peers that are installed (read from their metadata, no import)."""
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for name in ("jax", "jaxlib", "autograd", "mygrad"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


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
            "blas": blas_info(), "peers": peer_versions(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}
