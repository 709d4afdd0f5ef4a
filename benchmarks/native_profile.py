"""Where one training step's time goes, by library: `perf record` over each implementation, side by side.

    python -m benchmarks.native_profile --rows '32,50,128,65;32,100,512,65' --impls tinygrad,numpy_hoisted

cProfile (`--profile` of the main harness) sees Python functions only and slows them several times; this asks
the Linux `perf` sampler instead, which sees every native library at full speed: BLAS, numpy's loops, the
Python interpreter itself, libc (memcpy, malloc) and the kernel (page faults). Each implementation runs in a
fresh process of its own (its own block, as the harness times it, with glibc malloc steady), warms up, and
only its timed loop is sampled (perf starts disabled and the child enables it through perf's control fifo).
The table gives CPU ms per call by library: with one BLAS thread (the default here) that is the step's time,
split; the difference of two columns is where one implementation's extra time goes.

Needs `perf` (Debian: linux-perf) and kernel.perf_event_paranoid ≤ 2; nothing else in the project uses it.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import measure

# what a shared object is, for the reader: (a substring of its file name, the name the table gives it)
LIBRARIES = (("openblas", "BLAS (OpenBLAS)"), ("mkl", "BLAS (MKL)"), ("libpython", "Python interpreter"),
             ("_multiarray_umath", "numpy's loops and calls"), ("libc.so", "libc (memcpy, malloc)"),
             ("kernel", "kernel (page faults)"), ("libtorch", "torch"), ("libgomp", "OpenMP threads"))
FREQUENCY = 2000  # samples per second of CPU time (perf's cpu-clock: a timer, so every sample is 0.5 ms)


def library_of(dso):
    for part, name in LIBRARIES:
        if part in dso:
            return name
    return "other"


def _child(key, row_text, seconds, threads, control, ack):
    """Build `key` on the row, warm it up, then run it for `seconds` with perf enabled; print the call count.
    Set up as the harness's timing children are (steady malloc, its thread limits)."""
    from benchmarks.implementations import BY_KEY, make_problem, parse_rows
    measure.steady_allocator()
    measure._limit_threads([BY_KEY[key]], threads)
    step = BY_KEY[key].make(make_problem(parse_rows(row_text)[0]))
    for _ in range(5):
        step()

    def tell(command):
        with open(control, "w") as c:
            c.write(command + "\n")
        with open(ack) as a:
            a.readline()
    tell("enable")
    calls, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        step()
        calls += 1
    tell("disable")
    print(calls)


def samples_by(data, sort):
    """{dso or symbol: samples} from a perf.data file."""
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-n", "-g", "none",
                             "--sort", sort, "-t", "\t"], capture_output=True, text=True, check=True).stdout
    out = {}
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.split("\t")]
        if line.startswith("#") or len(cells) < 3 or not cells[0].endswith("%"):
            continue
        name = cells[-1].removeprefix("[.] ").removeprefix("[k] ")
        out[name] = out.get(name, 0) + int(cells[1])
    return out


def profile(key, row_text, seconds, threads):
    """(calls, {library: CPU ms per call}, {symbol: CPU ms per call}) of one implementation on one row."""
    with tempfile.TemporaryDirectory() as tmp:
        control, ack, data = (os.path.join(tmp, name) for name in ("control", "ack", "perf.data"))
        os.mkfifo(control)
        os.mkfifo(ack)
        env = measure.child_env()
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # as `make bench`: BLAS picks its own kernel
            env.pop(name, None)
        code = f"from benchmarks.native_profile import _child; _child({key!r}, {row_text!r}, {seconds!r}, " \
               f"{threads!r}, {control!r}, {ack!r})"
        run = subprocess.run(["perf", "record", "-q", "-F", str(FREQUENCY), "-D", "-1", "-o", data,
                              "--control", f"fifo:{control},{ack}", "--", sys.executable, "-c", code],
                             capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"native_profile: perf record of {key} at {row_text} failed: {run.stderr.strip()}")
        calls = int(run.stdout.split()[-1])
        per_call = lambda samples: 1e3 * samples / FREQUENCY / calls  # noqa: E731
        libraries = {}
        for dso, n in samples_by(data, "dso").items():
            name = library_of(dso)
            libraries[name] = libraries.get(name, 0) + per_call(n)
        symbols = {name: per_call(n) for name, n in samples_by(data, "sym").items()}
    return calls, libraries, symbols


def table(row_text, results, top=12):
    """Markdown: CPU ms per call by library and by the busiest symbols, one column per implementation."""
    keys = list(results)
    libraries = sorted({lib for _, libs, _ in results.values() for lib in libs},
                       key=lambda lib: -max(r[1].get(lib, 0) for r in results.values()))
    lines = [f"| {row_text} | " + " | ".join(keys) + " |", "|---|" + "--:|" * len(keys)]
    total = {k: sum(results[k][1].values()) for k in keys}
    lines.append("| **total CPU ms per call** | " + " | ".join(f"**{total[k]:.3g}**" for k in keys) + " |")
    for lib in libraries:
        lines.append(f"| {lib} | " + " | ".join(f"{results[k][1].get(lib, 0):.3g}" for k in keys) + " |")
    symbols = sorted({s for _, _, syms in results.values() for s in syms},
                     key=lambda s: -max(r[2].get(s, 0) for r in results.values()))[:top]
    for symbol in symbols:
        lines.append(f"| `{symbol}` | " + " | ".join(f"{results[k][2].get(symbol, 0):.3g}" for k in keys) + " |")
    lines.append("| calls sampled | " + " | ".join(str(results[k][0]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="32,50,128,65;32,100,512,65", help="rows B,T,d,V separated by ';'")
    parser.add_argument("--impls", default="tinygrad,tinygrad_replayed,numpy_hoisted",
                        help="implementation keys (benchmarks/implementations.py), comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="sampled time per implementation and row")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1: CPU time is the step's time)")
    parser.add_argument("-o", "--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    parts = [f"CPU ms per call by library and busiest symbols (perf record, {args.threads} BLAS thread(s), "
             f"{args.seconds:g} s sampled per implementation in a fresh process of its own, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n"]
    for row_text in args.rows.split(";"):
        results = {key: profile(key, row_text, args.seconds, args.threads) for key in args.impls.split(",")}
        parts.append(table(row_text, results))
        print(parts[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
