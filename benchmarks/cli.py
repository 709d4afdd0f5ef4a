"""`tinygrad-rnn bench` (also `python -m benchmarks`): time one BPTT training step against PyTorch, numpy and
the optional peers, print a short summary and write the full report (markdown, JSON, chart) to --out.

BLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when numpy loads, so this command cannot unset them itself:
`make bench` runs it as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks`, and the table's
header reports the kernel numpy's BLAS actually uses.
"""
import os
import sys

from tinygrad_rnn.cli_checks import non_negative_finite, positive_int

NAME = "bench"
HELP = ("benchmark one BPTT training step (forward + backward, copies on) against PyTorch autograd, "
        "torch.nn.RNN, hand-written numpy and (when installed) jax, HIPS autograd and MyGrad; prints a summary "
        "and writes a markdown report, JSON and a chart")
DEFAULT_OUT = os.path.join("out", "bench")            # the one default output folder: out/, like render's
COMMITTED_RESULTS = os.path.join("benchmarks", "results")


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="only the lecture's toy row (1,25,16,4), short timings")
    parser.add_argument("--rows", metavar="B,T,d,V[;B,T,d,V...]",
                        help="rows to run instead of the grid, e.g. '32,50,128,65;1,5000,32,16'")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"where to write the report, JSON and chart (default {DEFAULT_OUT}; the committed "
                             f"results are refreshed with --out {COMMITTED_RESULTS})")
    parser.add_argument("--compare", choices=("process", "interleaved", "none"), default=None,
                        help="time every implementation a second way and check that the times agree within "
                             "5 %%: in a fresh process of its own in every round (default), in turns of 0.1 s in "
                             "one process (the former scheme), or not at all (default with --quick)")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="rounds of fresh timing processes per row; a time is the best round's median "
                             "(default 5; 1 with --quick)")
    parser.add_argument("--malloc", choices=("steady", "default"), default="steady",
                        help="steady (default): fix glibc malloc's trim and mmap thresholds in every timing "
                             "process, so page faults do not depend on what the process ran before; default: "
                             "leave malloc as it is")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the float64 check that every implementation gives the same loss and gradients")
    parser.add_argument("--min-time", type=non_negative_finite, default=None,
                        help="seconds each implementation is timed per round, at least (default 0.5; 0.05 with "
                             "--quick; 0: only --min-repeats calls)")
    parser.add_argument("--min-repeats", type=positive_int, default=5,
                        help="calls per implementation per row, at least")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurements (--quick measures numpy and tinygrad_rnn only)")
    parser.add_argument("--no-rss", action="store_true",
                        help="skip the ru_maxrss measurement (one fresh process per implementation and row; "
                             "always skipped with --quick)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the per-op overhead measurement")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    parser.add_argument("--wait-quiet", type=non_negative_finite, default=60.0, metavar="SECONDS",
                        help="before each row, wait up to this long for other processes to go quiet (default 60; "
                             "0 = never wait)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads for numpy (set through threadpoolctl) and torch.set_num_threads "
                             "(default: numpy's BLAS thread count, and torch gets the same)")
    parser.add_argument("--profile", action="store_true",
                        help="also write a cProfile of the tinygrad_rnn step for each row (profile-<row>.txt)")


def _check_writable(out_dir):
    """Make the results directory now and prove it takes a file: a bad --out fails in a second."""
    import tempfile
    from pathlib import Path
    from tinygrad_rnn.errors import UsageError
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot write results there ({e.strerror or e})") from None


def run(args):
    from tinygrad_rnn.errors import UsageError
    from . import bench_bptt as bench

    if args.quick and args.rows:
        raise UsageError("--quick and --rows choose rows both; give one of them")
    try:
        rows = bench.parse_rows(args.rows) if args.rows else bench.QUICK_GRID if args.quick else bench.GRID
    except ValueError as e:
        raise UsageError(str(e)) from None
    min_time = args.min_time if args.min_time is not None else 0.05 if args.quick else 0.5
    rounds = args.rounds or (1 if args.quick else 5)
    stem = "bptt-quick" if args.quick else "bptt-rows" if args.rows else "bptt"
    out_dir = args.out
    compare = args.compare or ("none" if args.quick else "process")
    _check_writable(out_dir)  # before minutes of measuring, not after
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    results = bench.run_benchmark(rows, check=not args.no_check, min_time=min_time, min_repeats=args.min_repeats,
                                  memory=False if args.no_memory else "tracemalloc" if args.quick else True,
                                  overhead=not args.no_overhead,
                                  wait_quiet=0.0 if args.quick else args.wait_quiet,
                                  rss=not (args.quick or args.no_rss),
                                  overhead_sizes=dict(n_forward=500, chain=100, repeats=2) if args.quick else None,
                                  threads=args.threads, log=log, memory_lengths=() if args.quick else bench.MEMORY_T,
                                  compare=compare, warmup_time=min(bench.WARMUP_S, min_time), rounds=rounds,
                                  malloc=args.malloc == "steady")
    paths = bench.write_results(results, out_dir, stem, chart=not args.no_chart)
    if args.profile:
        from pathlib import Path
        for row in rows:
            path = Path(out_dir) / f"profile-{row.B}-{row.T}-{row.d}-{row.V}.txt"
            path.write_text(bench.profile_tinygrad(row))
            paths.append(path)
    print(bench.summary(results), end="")
    print("full report: " + ", ".join(str(p) for p in paths))
    return 0


def main(argv=None):
    """`python -m benchmarks [options]`: the same command as `tinygrad-rnn bench`."""
    from tinygrad_rnn.cli import OneLineArgumentParser
    from tinygrad_rnn.errors import UsageError
    parser = OneLineArgumentParser(prog="python -m benchmarks", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UsageError, ValueError, OSError) as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
