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
    jax_scan, hips_autograd, mygrad   optional peers (peers.py), skipped with a note when not installed

plus the FLOP floor: 2TB(5Vd + 3d²) FLOPs at the sgemm GFLOP/s measured on this machine.

Timing: in rounds of fresh processes, each building every implementation and timing each in its own block after
its own warm-up; a time is the best round's median. As a check, every round also times each implementation in a
fresh process of its own (the two must agree within 5 %). glibc malloc's trim and mmap thresholds are fixed in
every timing process. See measure.py for why (turns of 0.1 s, one process, and malloc's moving thresholds mislead).

Usage: `results = run_benchmark(GRID)` then `write_results(results, out_dir)` (what `tinygrad-rnn bench` does),
or the pieces: `make_problem`, `IMPLEMENTATIONS`, `check_implementations`, `time_rounds`, `time_in_own_process`,
`peak_memory`, `op_overhead`, `profile_tinygrad`. The implementations live in `implementations.py` and
`peers.py`, the measuring (timing, memory, overhead, machine) in `measure.py`, the files (markdown, JSON, PNG)
in `report.py`; this module runs them.
BLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when it loads, so this module never changes them: run it as
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks` (what `make bench` does); the header of the
results says which kernel numpy's BLAS actually uses.
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .implementations import (BY_KEY, GRID, IMPLEMENTATIONS, PARAMS, QUICK_GRID, Implementation,  # noqa: F401
                              Problem, Row, available_implementations, make_matmul_floor, make_numpy_hoisted,
                              make_numpy_minchar, make_problem, make_tinygrad, make_torch_fused, make_torch_loop,
                              make_torch_stacked, parse_rows, skipped_implementations, torch_available)
from .measure import (WARMUP_S, CpuMeter, best_round, configure_torch, environment, op_overhead, peak_memory,  # noqa: F401
                      peak_rss_delta, round_medians, sgemm_gflops, steady_allocator, time_block, time_blocks,
                      time_in_own_process, time_in_shared_process, time_interleaved, time_rounds, wait_until_quiet)
from .report import markdown, summary, write_chart, write_json, write_results  # noqa: F401

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --- correctness first --------------------------------------------------------------------------------------

class MismatchError(AssertionError):
    pass


def check_implementations(row, implementations=None, reference="numpy_minchar", seed=0, rtol=1e-9):
    """Run every checked implementation twice in float64 on the same problem and assert that the loss and the
    five gradients of the second call (a timed call is a repeated one: nothing may accumulate across calls)
    equal the reference's. Returns {key: largest relative difference}."""
    implementations = [i for i in (implementations or available_implementations()) if i.checked]
    p = make_problem(row, np.float64, seed)
    ref_loss, ref_grads = BY_KEY[reference].make(p)()
    worst = {}
    for impl in implementations:
        step = impl.make(p)
        step()
        loss, grads = step()
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


# --- targets ---------------------------------------------------------------------------------------------------

# The engine's implementations that the targets are judged for: key → replayed (a replayed graph, not eager).
ENGINES = {"tinygrad": False, "tinygrad_replayed": True}


def targets(row, median, engine="tinygrad", replayed=False):
    """[(text, met)] for this row: the performance targets, each with the ratio measured (medians, one run)."""
    tg, out = median.get(engine), []
    if tg is None:
        return out

    def at_most(key, limit):
        if median.get(key):
            r = tg / median[key]
            out.append((f"≤ {limit:g}× {BY_KEY[key].short}: {r:.2f}×", r <= limit))

    def faster(key):
        if median.get(key):
            r = tg / median[key]
            out.append((f"faster than {BY_KEY[key].short}: {r:.2f}×", r < 1))
    for peer in ("hips_autograd", "mygrad"):           # every numpy/eager autodiff peer, on every row
        faster(peer)
    if row.B == 1 and replayed:
        at_most("numpy_hoisted", 2)
        faster("torch_fused")
        at_most("jax_scan", 2)
    elif row.B == 1:
        at_most("torch_loop", 0.5)
    elif row.d >= 512:                                 # BLAS-bound
        at_most("numpy_hoisted", 1.1)
        faster("torch_loop")
    else:
        at_most("numpy_hoisted", 1.5)
    return out


# --- the run -------------------------------------------------------------------------------------------------

MEMORY_T = (500, 1000, 2000, 4000)  # the long-sequence row's B, d, V at growing T: is memory linear in T?


def memory_versus_T(implementations, lengths=MEMORY_T, B=1, d=32, V=16, log=print):
    """Peak memory of one step (as `peak_memory` measures it) of each implementation at several T, the
    other sizes fixed: [{"T": T, "peak_bytes": {key: bytes}}]."""
    out = []
    for T in lengths:
        problem = make_problem(Row(B, T, d, V), np.float32)
        peaks = {}
        for impl in implementations:
            if impl.memory:
                step = impl.make(problem)
                step()  # warm: first-call allocations (caches, lazy imports) are not the step's
                peaks[impl.key] = peak_memory(impl, step)
        out.append({"T": T, "B": B, "d": d, "V": V, "peak_bytes": peaks})
        log(f"memory at T = {T}: " + ", ".join(f"{k} {v / 2 ** 20:.2f} MiB" for k, v in peaks.items() if v))
    return out


COMPARE = ("process", "interleaved", "none")  # the second way each row is timed, to check the first


def run_benchmark(rows=GRID, check=True, min_time=1.0, min_repeats=5, memory=True, overhead=True,
                  implementations=None, wait_quiet=0.0, rss=True, overhead_sizes=None, threads=None, log=print,
                  memory_lengths=MEMORY_T, compare="process", agree_within=0.05, warmup_time=WARMUP_S, rounds=5,
                  malloc=True):
    """Check, time and measure every implementation on every row. Returns the results dict that
    `markdown`, `summary`, `write_chart` and `write_json` turn into text and files.

    Timing (`time_rounds`): `rounds` rounds, each a fresh process that builds every implementation and times
    each in its own block after its own warm-up; a row's time for an implementation is its best round's median
    (the host only ever slows a round down). The check — compare="process" — times each implementation the
    same way in a fresh process of its own in every round; "interleaved" instead times them in this process in
    the former ~0.1 s turns (`time_interleaved`); the two must agree within `agree_within` (the report lists the
    cells that do not). "none" skips the check.
    malloc: fix glibc malloc's trim and mmap thresholds in every timing process (`steady_allocator`).
    memory: tracemalloc / torch-profiler peaks ("tracemalloc": numpy and tinygrad_rnn only, no profiler runs),
    and with rss=True the peak-RSS growth in a fresh process per implementation.
    wait_quiet: seconds to wait, before each row, for other processes to go quiet.
    overhead_sizes: keyword arguments for `op_overhead` (smaller loops for a quick run).
    threads: BLAS threads for numpy (set at run time through threadpoolctl, restored afterwards) and torch;
    None keeps numpy's (torch then gets the same count)."""
    if compare not in COMPARE:
        raise ValueError(f"bench --compare: one of {', '.join(COMPARE)}, got {compare!r}")
    if threads is not None:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=threads, user_api="blas"):
            results = run_benchmark(rows, check, min_time, min_repeats, memory, overhead, implementations,
                                    wait_quiet, rss, overhead_sizes, None, log, memory_lengths, compare,
                                    agree_within, warmup_time, rounds, malloc)
        results["settings"]["threads"] = threads
        return results
    skipped = {} if implementations else skipped_implementations()
    implementations = implementations or available_implementations()
    for key, note in skipped.items():
        log(f"{BY_KEY[key].short}: {note}")
    env = environment()
    env["malloc"] = steady_allocator() if malloc else None
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
    results = {"environment": env, "settings": {"min_time": min_time, "min_repeats": min_repeats, "check": check,
                                                "timing": "rounds", "rounds": rounds, "warmup_s": warmup_time,
                                                "compare": compare, "agree_within": agree_within},
               "implementations": {i.key: i.short for i in implementations},
               "labels": {i.key: i.label for i in implementations}, "skipped": skipped, "rows": []}
    keys = [impl.key for impl in implementations]
    started = time.perf_counter()
    for row in rows:
        entry = {"row": [row.B, row.T, row.d, row.V], "label": row.label, "flops": row.flops}
        if check:
            entry["check"] = check_implementations(row, implementations)
            log(f"{row.label}: float64 loss and gradients agree (worst relative difference "
                f"{max(entry['check'].values()):.1e})")
        if wait_quiet:
            wait_until_quiet(wait_quiet, log=log)
        # the machine's peak is the best sgemm rate seen: measured again at every row, after any wait
        env["sgemm_gflops"] = max(env["sgemm_gflops"], sgemm_gflops(repeats=5 if min_time >= 0.5 else 1))
        with CpuMeter() as meter:
            timed = time_rounds(keys, row, rounds, compare == "process", min_time, min_repeats, warmup_time,
                                threads, malloc)
        entry["others_cores"] = meter.others
        shared = {k: ts for k, ts in timed["shared"].items() if any(ts)}
        failed = sorted(set(keys) - set(shared))
        if failed:
            log(f"{row.label}: the timing processes of {', '.join(failed)} failed; left out of this row")
        entry["round_medians_s"] = {k: round_medians(ts) for k, ts in shared.items()}
        entry["median_s"] = {k: best_round(ts) for k, ts in shared.items()}
        entry["min_s"] = {k: min(min(t) for t in ts if t) for k, ts in shared.items()}
        entry["repeats"] = {k: sum(len(t) for t in ts if t) for k, ts in shared.items()}
        entry["targets"] = {key: targets(row, entry["median_s"], key, replayed) for key, replayed in ENGINES.items()
                            if key in entry["median_s"]}
        log(f"{row.label}: " + ", ".join(f"{k} {1e3 * v:.3g} ms" for k, v in entry["median_s"].items())
            + ("" if meter.others is None else f" (other processes: {meter.others:.2f} cores)"))
        if compare != "none":
            entry["second_way"] = second_way(compare, timed, implementations, row, min_time, min_repeats,
                                             meter.others)
            entry["agreement"] = agreement(entry["median_s"], entry["second_way"]["median_s"], agree_within)
            apart = [f"{k} {r:.2f}×" for k, (r, ok) in entry["agreement"].items() if not ok]
            log(f"{row.label}: shared ÷ {compare}: " + ("all within " + f"{100 * agree_within:g} %" if not apart
                                                        else "apart: " + ", ".join(apart)))
        if memory:
            problem = make_problem(row, np.float32)
            steps = {impl.key: impl.make(problem) for impl in implementations if impl.memory}
            kinds = ("tracemalloc", "profiler") if memory != "tracemalloc" else ("tracemalloc",)
            entry["peak_bytes"] = {impl.key: peak_memory(impl, steps[impl.key]) for impl in implementations
                                   if impl.memory in kinds}
            if rss:
                entry["rss_bytes"] = {impl.key: peak_rss_delta(impl.key, row) for impl in implementations
                                      if impl.memory}
            del steps, problem
        results["rows"].append(entry)
    for entry in results["rows"]:
        entry["flop_floor_s"] = entry["flops"] / (env["sgemm_gflops"] * 1e9)
    if memory and memory_lengths:
        kept = [impl for impl in implementations if impl.memory == "tracemalloc" or memory != "tracemalloc"]
        results["memory_vs_T"] = memory_versus_T(kept, memory_lengths, log=log)
    if overhead:
        if wait_quiet:
            wait_until_quiet(wait_quiet, log=log)
        with CpuMeter() as meter:
            results["overhead"] = op_overhead(**(overhead_sizes or {}))
        results["overhead_others_cores"] = meter.others
    results["elapsed_s"] = time.perf_counter() - started
    return results


def second_way(how, timed, implementations, row, min_time, min_repeats, others=None):
    """The row's check timing: {"how", "median_s", "others_cores"} (a None median where every child failed).
    "process": the own-process rounds `time_rounds` already ran; "interleaved": turns of ~0.1 s here."""
    if how == "process":
        return {"how": how, "others_cores": others,
                "round_medians_s": {k: round_medians(ts) for k, ts in timed["own"].items()},
                "median_s": {k: best_round(ts) for k, ts in timed["own"].items()}}
    problem = make_problem(row, np.float32)
    steps = {impl.key: impl.make(problem) for impl in implementations}
    with CpuMeter() as meter:
        times = time_interleaved(steps, min_time=min_time, min_repeats=min_repeats)
    return {"how": how, "others_cores": meter.others,
            "median_s": {k: statistics.median(ts) if ts else None for k, ts in times.items()}}


def agreement(first, second, within=0.05):
    """{key: (first ÷ second, |ratio − 1| ≤ within)} for the medians both ways measured."""
    out = {}
    for key, a in first.items():
        b = second.get(key)
        if b:
            out[key] = (a / b, abs(a / b - 1) <= within)
    return out


if __name__ == "__main__":
    from .cli import main
    sys.exit(main())
