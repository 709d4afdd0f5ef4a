"""Benchmark of the BPTT analysis at long T: gradient_flow and contribution_norms of an nn.RNN over
T = 1000 steps with d = 128 (every cell), each measurement in a fresh process (time and peak memory).

    python -m benchmarks.bench_analysis                       # T = 1000, d = 128, cells rnn gru lstm
    python -m benchmarks.bench_analysis --T 200 --d 32 --cells rnn --out out/analysis.md

Writes a Markdown table (default out/bench-analysis.md) and prints it. BLAS is pinned to --threads
threads (default 1: on a shared 2-core machine two BLAS threads contend with everything else).
Not a unit test: the target (≤ 10 s for each call at T = 1000, d = 128) is reported, not asserted.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

TARGET_SECONDS = 10.0
FUNCTIONS = ("gradient_flow", "contribution_norms")

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
cell, T, d, threads, function = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
threadpool_limits(threads)
from tinygrad_rnn import nn
from tinygrad_rnn import analysis
rng = np.random.default_rng(0)
n = 16
model = nn.RNN(n, d, n, cell=cell, seed=0)
xs = np.eye(n, dtype=np.float32)[rng.integers(0, n, T)]
L, out = model.loss(xs, rng.integers(0, n, T))
L.backward()
weight = model.W if cell == "rnn" else model.cell.weight_hh
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if function == "gradient_flow":
    result = analysis.gradient_flow(out)
    summary = f"rate {result.rate:.3g}, {result.verdict}"
else:
    result = analysis.contribution_norms(out, weight)
    summary = f"‖C‖ max {result.max():.3g}"
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024,
                  "summary": summary}))
"""


def measure(cell, T, d, threads, function):
    """One measurement in a fresh process: {seconds, rss_before_mb, rss_peak_mb, summary}."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    done = subprocess.run([sys.executable, "-c", _CHILD, cell, str(T), str(d), str(threads), function],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_analysis: {function} for cell {cell} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def table(rows, T, d, threads):
    lines = [f"# BPTT analysis at long T (T = {T}, d = {d})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"numpy {np.__version__}; BLAS threads {threads}; float64 analysis of a float32 nn.RNN "
             f"(n = k = 16, one sequence). Each cell of the table is one fresh process.", "",
             "| cell | function | seconds | ≤ 10 s | peak RSS (MB) | RSS before the call (MB) | load avg | result |",
             "|---|---|--:|---|--:|--:|--:|---|"]
    for r in rows:
        met = "yes" if r["seconds"] <= TARGET_SECONDS else "no"
        lines.append(f"| {r['cell']} | {r['function']} | {r['seconds']:.2f} | {met} | {r['rss_peak_mb']:.0f} | "
                     f"{r['rss_before_mb']:.0f} | {r['load']:.1f} | {r['summary']} |")
    lines += ["", "Cost model (see the docstrings): the step Jacobians of every step come from one forward of "
              "the cell over all T steps and one backward per state block (h, and c for the LSTM; w = d or 2d); "
              "gradient_flow then chains T products of w×w matrices back from t = T (O(T·w³)) and takes T "
              "spectral norms (warm-started Lanczos above w = 64, O(w²) each); contribution_norms carries all "
              "T loss gradients back at once (O(T²·w²/2)) and needs no T×T×|W| array (O(T² + 256·w²) "
              "memory: the step Jacobians stream from the end)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"], choices=["rnn", "gru", "lstm"])
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=list(FUNCTIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join("out", "bench-analysis.md"))
    args = parser.parse_args(argv)
    if args.T < 2 or args.d < 1 or args.threads < 1:
        parser.error(f"need --T ≥ 2, --d ≥ 1, --threads ≥ 1, got {args.T}, {args.d}, {args.threads}")
    rows = []
    for cell in args.cells:
        for function in args.functions:
            load = load_average()
            r = measure(cell, args.T, args.d, args.threads, function)
            rows.append(dict(r, cell=cell, function=function, load=load))
            print(f"{cell:5s} {function:19s} {r['seconds']:7.2f} s  peak RSS {r['rss_peak_mb']:.0f} MB  "
                  f"({r['summary']})", flush=True)
    text = table(rows, args.T, args.d, args.threads)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
