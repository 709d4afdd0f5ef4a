"""The benchmark harness: every implementation computes the same step (float64), and `bench --quick` writes
its table. No timing assertions: speed is what the harness reports, not what the tests check."""
import json
import os

import numpy as np
import pytest

from benchmarks import bench_bptt as bench
from tinygrad_rnn.cli import main

TINY = bench.Row(B=2, T=4, d=3, V=5)


def test_reference_gradients_match_finite_differences():
    # the min-char-rnn reference every other implementation is compared with is itself right
    p = bench.make_problem(TINY, np.float64, seed=3)
    loss, grads = bench.make_numpy_minchar(p)()
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name in bench.PARAMS:
        w = p.weights[name]
        for flat in rng.choice(w.size, size=3, replace=False):
            index = np.unravel_index(flat, w.shape)
            saved = w[index]
            w[index] = saved + eps
            up = bench.make_numpy_minchar(p)()[0]
            w[index] = saved - eps
            down = bench.make_numpy_minchar(p)()[0]
            w[index] = saved
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-8), name


def test_numpy_and_tinygrad_implementations_agree():
    impls = [i for i in bench.IMPLEMENTATIONS if not i.uses_torch]
    worst = bench.check_implementations(TINY, impls)
    assert set(worst) == {"tinygrad", "numpy_minchar", "numpy_hoisted"}
    assert max(worst.values()) < 1e-12


def test_torch_implementations_agree():
    pytest.importorskip("torch")
    worst = bench.check_implementations(TINY, bench.IMPLEMENTATIONS)
    assert set(worst) == {"tinygrad", "torch_loop", "torch_stacked", "torch_fused", "numpy_minchar", "numpy_hoisted"}
    assert max(worst.values()) < 1e-12
    # B = 1, the lecture's toy row, also agrees (and gives the same loss as tinygrad_rnn directly)
    assert max(bench.check_implementations(bench.Row(1, 25, 16, 4)).values()) < 1e-12


def test_a_wrong_gradient_is_caught():
    def make_wrong(p):
        step = bench.make_numpy_hoisted(p)

        def wrong():
            loss, grads = step()
            grads["W"] = grads["W"] * (1 + 1e-6)
            return loss, grads
        return wrong
    wrong = bench.Implementation("wrong", "dW off by 1e-6", make_wrong)
    with pytest.raises(bench.MismatchError, match=r"wrong row \(2,4,3,5\)"):
        bench.check_implementations(TINY, [wrong])


def test_matmul_floor_does_the_step_flops():
    # the floor runs exactly the matmuls counted by Row.flops
    p = bench.make_problem(TINY, np.float32)
    step = bench.make_matmul_floor(p)
    assert np.isnan(step()[0])
    B, T, d, V = TINY.B, TINY.T, TINY.d, TINY.V
    counted = 2 * (T * B * V * d) * 5 + 2 * (T * B * d * d) * 3
    assert TINY.flops == counted


def test_targets_name_the_ratio_and_whether_met():
    median = {"tinygrad": 1.0, "torch_loop": 4.0, "torch_fused": 0.5, "numpy_minchar": 2.0}
    goals = dict(bench.targets(bench.Row(1, 25, 16, 4), median))
    assert goals == {"≤0.5× torch loop: 0.25×": True, "≤1× nn.RNN: 2.00×": False, "<1× min-char: 0.50×": True}
    big = dict(bench.targets(bench.Row(32, 100, 512, 65), {"tinygrad": 1.0, "torch_stacked": 1.0,
                                                           "matmul_floor": 0.5, "numpy_hoisted": 0.8}))
    assert big == {"≤1.1× torch stacked: 1.00×": True, "≥60% of matmul floor: 50%": False,
                   "≤1.5× hoisted: 1.25×": True}


def test_parse_rows():
    assert bench.parse_rows("1,25,16,4; (32,50,128,65)") == [bench.Row(1, 25, 16, 4), bench.Row(32, 50, 128, 65)]
    with pytest.raises(ValueError, match="four positive integers"):
        bench.parse_rows("1,25,16")


def test_bad_rows_are_a_usage_error(capsys):
    assert main(["bench", "--rows", "1,2,x,4"]) == 2
    assert "bench --rows" in capsys.readouterr().err


def test_unwritable_out_fails_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["bench", "--quick", "--out", str(blocker / "results")]) == 2
    assert "cannot write results there" in capsys.readouterr().err


def test_quick_cli_writes_table_json_and_chart(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    openblas = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    assert main(["bench", "--quick", "--out", str(tmp_path), "--min-time", "0", "--min-repeats", "1"]) == 0
    assert {k: os.environ.get(k) for k in openblas} == openblas  # the bench never touches BLAS's variables
    table = (tmp_path / "bptt-quick.md").read_text()
    for expected in ("(1,25,16,4)", "kernel", "threads", "torch.set_num_threads", "tinygrad_rnn",
                     "torch.nn.RNN + Linear", "numpy hoisted", "target / met?", "Peak memory", "Per-node overhead"):
        assert expected in table, expected
    results = json.loads((tmp_path / "bptt-quick.json").read_text())
    (row,) = results["rows"]
    assert row["row"] == [1, 25, 16, 4] and max(row["check"].values()) < 1e-12
    assert set(row["median_s"]) == set(bench.BY_KEY) and all(v > 0 for v in row["median_s"].values())
    assert row["peak_bytes"]["tinygrad"] > 0
    assert (tmp_path / "bptt-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| (1,25,16,4) |" in capsys.readouterr().out


def test_memory_versus_T_table_reports_bytes_per_step():
    from benchmarks.implementations import BY_KEY
    from benchmarks.report import _memory_versus_T
    impls = [BY_KEY["tinygrad"], BY_KEY["numpy_minchar"]]
    entries = bench.memory_versus_T(impls, lengths=(20, 40), log=lambda *_: None)
    assert [e["T"] for e in entries] == [20, 40]
    assert all(e["peak_bytes"]["tinygrad"] > 0 for e in entries)
    # twice the steps, about twice the memory: linear in T
    assert 1.5 < entries[1]["peak_bytes"]["tinygrad"] / entries[0]["peak_bytes"]["tinygrad"] < 2.5
    text = "\n".join(_memory_versus_T(entries, {i.key: i.label for i in impls}))
    assert "KiB per step" in text and "linear in T" in text
