"""benchmarks/native_profile.py: perf's samples, read into CPU ms per call by library, are the step's time split.

The real run needs Linux `perf` allowed to sample this user's processes; without it that test is skipped (the
rest of the project never uses perf)."""
import shutil
import subprocess
import sys

import pytest

from benchmarks import native_profile as native


def test_shared_objects_are_named_by_library():
    assert native.library_of("libscipy_openblas64_-32a4b2a6.so") == "BLAS (OpenBLAS)"
    assert native.library_of("libpython3.11.so.1.0") == "Python interpreter"
    assert native.library_of("_multiarray_umath.cpython-311-x86_64-linux-gnu.so") == "numpy's loops and calls"
    assert native.library_of("libc.so.6") == "libc (memcpy, malloc)"
    assert native.library_of("[kernel.kallsyms]") == "kernel (page faults)"
    assert native.library_of("libz.so.1") == "other"


def test_the_table_totals_each_column_and_lists_the_busiest_symbols_first():
    results = {"a": (10, {"BLAS (OpenBLAS)": 2.0, "Python interpreter": 1.0}, {"sgemm": 2.0, "eval": 1.0}),
               "b": (20, {"BLAS (OpenBLAS)": 2.5}, {"sgemm": 2.5})}
    lines = native.table("1,2,3,4", results).splitlines()
    assert lines[0] == "| 1,2,3,4 | a | b |"
    assert lines[2] == "| **total CPU ms per call** | **3** | **2.5** |"
    assert lines[3:5] == ["| BLAS (OpenBLAS) | 2 | 2.5 |", "| Python interpreter | 1 | 0 |"]
    assert lines[5:7] == ["| `sgemm` | 2 | 2.5 |", "| `eval` | 1 | 0 |"]
    assert lines[-1] == "| calls sampled | 10 | 20 |"


def _perf_works():
    if shutil.which("perf") is None:
        return False
    probe = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "--", sys.executable, "-c", "pass"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _perf_works(), reason="Linux perf is missing or may not sample this process")
def test_only_the_timed_loop_is_sampled():
    """With one BLAS thread the CPU time per call times the calls is the sampled loop's length: perf's control
    fifo kept the imports and the warm-up out (they would add a second or more)."""
    seconds = 1.5
    calls, libraries, symbols = native.profile("numpy_hoisted", "1,25,16,4", seconds, threads=1)
    total_ms = sum(libraries.values())
    assert calls > 100 and libraries["numpy's loops and calls"] > 0
    assert 0.8 * seconds < total_ms * calls / 1e3 < 1.1 * seconds
    assert abs(sum(symbols.values()) - total_ms) < 1e-6 * total_ms + 1e-9
