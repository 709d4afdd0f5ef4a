"""benchmarks/bench_analysis.py at a toy size: it measures in fresh processes and writes its table (the
T = 1000, d = 128 timings are the benchmark's job, not a unit test's)."""
import pytest

pytest.importorskip("threadpoolctl")
from benchmarks import bench_analysis  # noqa: E402


def test_bench_analysis_writes_a_table_of_times_and_memory(tmp_path, capsys):
    out = tmp_path / "analysis.md"
    assert bench_analysis.main(["--T", "12", "--d", "4", "--cells", "rnn", "lstm", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| rnn", "| lstm"))]
    assert len(rows) == 4 and all("| yes |" in row for row in rows)  # toy sizes: far below 10 s
    assert "gradient_flow" in text and "contribution_norms" in text and "peak RSS" in text
    with pytest.raises(SystemExit):
        bench_analysis.main(["--T", "1"])
