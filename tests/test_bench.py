"""The benchmark harness: every implementation computes the same step (float64), and `bench --quick` writes
its table. No timing assertions: speed is what the harness reports, not what the tests check."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_bptt as bench
from tinygrad_rnn.cli import main

TINY = bench.Row(B=2, T=4, d=3, V=5)
ROOT = Path(bench.__file__).resolve().parent.parent


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
    impls = [i for i in bench.IMPLEMENTATIONS if not i.requires]  # no optional library needed
    worst = bench.check_implementations(TINY, impls)
    assert set(worst) == {"tinygrad", "tinygrad_replayed", "numpy_minchar", "numpy_hoisted"}
    assert max(worst.values()) < 1e-12


def test_torch_and_peer_implementations_agree():
    pytest.importorskip("torch")
    available = bench.available_implementations()
    worst = bench.check_implementations(TINY, available)
    core = {"tinygrad", "tinygrad_replayed", "torch_loop", "torch_stacked", "torch_fused", "numpy_minchar",
            "numpy_hoisted"}
    peers = {impl.key for impl in available if impl.requires and not impl.uses_torch}
    assert set(worst) == core | peers
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


def test_a_gradient_that_accumulates_across_calls_is_caught():
    # timed calls are repeated calls: a step whose second call adds onto the first call's gradients is wrong
    def make_accumulating(p):
        step, total = bench.make_numpy_hoisted(p), {}

        def accumulating():
            loss, grads = step()
            for name, g in grads.items():
                total[name] = total.get(name, 0) + g
            return loss, dict(total)
        return accumulating
    impl = bench.Implementation("accumulating", "adds onto the last call's gradients", make_accumulating)
    with pytest.raises(bench.MismatchError, match="accumulating row"):
        bench.check_implementations(TINY, [impl])


def test_each_peer_is_skipped_with_a_note_when_its_module_is_missing():
    from benchmarks.implementations import missing_modules
    ghost = bench.Implementation("ghost", "needs a module that does not exist", bench.make_numpy_hoisted,
                                 requires=("numpy", "no_such_module_for_bench"))
    assert missing_modules(ghost) == ["no_such_module_for_bench"]
    for key, note in bench.skipped_implementations().items():
        assert note.startswith("skipped: ") and "not installed" in note
        assert key not in {impl.key for impl in bench.available_implementations()}


def test_matmul_floor_does_the_step_flops():
    # the floor runs exactly the matmuls counted by Row.flops
    p = bench.make_problem(TINY, np.float32)
    step = bench.make_matmul_floor(p)
    assert np.isnan(step()[0])
    B, T, d, V = TINY.B, TINY.T, TINY.d, TINY.V
    counted = 2 * (T * B * V * d) * 5 + 2 * (T * B * d * d) * 3
    assert TINY.flops == counted


def test_targets_name_the_ratio_and_whether_met():
    median = {"tinygrad": 1.0, "torch_loop": 4.0, "torch_fused": 0.5, "numpy_hoisted": 0.25, "jax_scan": 0.4,
              "hips_autograd": 10.0, "mygrad": 0.9}
    toy = bench.Row(1, 25, 16, 4)
    assert dict(bench.targets(toy, median)) == {"faster than HIPS autograd: 0.10×": True,
                                                "faster than MyGrad: 1.11×": False,
                                                "≤ 0.5× torch loop, CE/step: 0.25×": True}
    replayed = dict(bench.targets(toy, median, replayed=True))
    assert {k: v for k, v in replayed.items() if "than HIPS" not in k and "MyGrad" not in k} == {
        "≤ 2× numpy hoisted: 4.00×": False, "faster than torch.nn.RNN + Linear: 2.00×": False,
        "≤ 2× jax.jit(lax.scan): 2.50×": False}
    big = dict(bench.targets(bench.Row(32, 100, 512, 65), {"tinygrad": 1.0, "torch_loop": 1.25,
                                                           "numpy_hoisted": 0.95}))
    assert big == {"≤ 1.1× numpy hoisted: 1.05×": True, "faster than torch loop, CE/step: 0.80×": True}
    mid = dict(bench.targets(bench.Row(32, 50, 128, 65), {"tinygrad": 1.0, "numpy_hoisted": 0.5}))
    assert mid == {"≤ 1.5× numpy hoisted: 2.00×": False}
    assert "issue" not in " ".join(list(replayed) + list(big) + list(mid))  # plain statements


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
                     "torch.nn.RNN + Linear", "numpy hoisted", "targets (medians)", "Peak memory", "Per-node overhead",
                     "in its own block after its own warm-up", "measured side by side in this run"):
        assert expected in table, expected
    assert "issue" not in table.lower()  # no project-internal wording in a report
    results = json.loads((tmp_path / "bptt-quick.json").read_text())
    (row,) = results["rows"]
    assert row["row"] == [1, 25, 16, 4] and max(row["check"].values()) < 1e-12
    available = {impl.key for impl in bench.available_implementations()}
    assert set(row["median_s"]) == available and all(v > 0 for v in row["median_s"].values())
    assert set(results["skipped"]) == set(bench.BY_KEY) - available
    assert row["peak_bytes"]["tinygrad"] > 0
    assert (tmp_path / "bptt-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    # a short summary on the terminal, the full report in the file
    assert "(1,25,16,4): tinygrad_rnn " in out and "targets: " in out and str(tmp_path / "bptt-quick.md") in out
    assert "## Time of one step" not in out and len(out.splitlines()) < 10


def test_quick_writes_under_out_and_leaves_the_committed_results_alone(tmp_path, monkeypatch, capsys):
    committed = {p: p.stat().st_mtime_ns for p in bench.RESULTS_DIR.iterdir()}
    monkeypatch.chdir(tmp_path)
    impls = [bench.BY_KEY["numpy_hoisted"]]
    monkeypatch.setattr(bench, "available_implementations", lambda: impls)
    assert main(["bench", "--quick", "--min-time", "0", "--min-repeats", "1", "--no-chart", "--no-overhead"]) == 0
    assert (tmp_path / "out" / "bench" / "bptt-quick.md").is_file()
    assert {p: p.stat().st_mtime_ns for p in bench.RESULTS_DIR.iterdir()} == committed


def test_time_block_warms_up_then_times_enough_calls():
    import time
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)
    times = bench.time_block(step, min_time=0.0, min_repeats=3, warmup_time=0.0)
    assert len(times) == 3 and len(calls) == 5 and all(t >= 0.002 for t in times)  # 2 warm-up calls, untimed
    calls.clear()
    times = bench.time_block(step, min_time=0.03, min_repeats=1, warmup_time=0.02)
    assert sum(times) >= 0.03
    warm = len(calls) - len(times)
    assert warm >= 2 and calls[warm] - calls[0] >= 0.02 - 0.001  # timing starts after the warm-up's time


def test_each_implementation_times_in_its_own_process():
    times = bench.time_in_own_process("numpy_hoisted", TINY, min_time=0.0, min_repeats=3, warmup_time=0.0)
    assert len(times) == 3 and all(0 < t < 1 for t in times)
    assert bench.time_in_own_process("no_such_implementation", TINY, min_time=0.0, min_repeats=1) is None


def test_agreement_flags_medians_more_than_5_percent_apart():
    agree = bench.agreement({"a": 1.00, "b": 1.06, "c": 0.5, "d": 1.0}, {"a": 0.97, "b": 1.0, "c": None})
    assert agree["a"][1] and not agree["b"][1]
    assert agree["b"][0] == pytest.approx(1.06) and set(agree) == {"a", "b"}  # unmeasured: no verdict


def test_shared_process_times_each_implementation_in_its_own_block():
    times = bench.time_in_shared_process(["numpy_hoisted", "numpy_minchar"], TINY, min_time=0.0, min_repeats=3,
                                         warmup_time=0.0)
    assert set(times) == {"numpy_hoisted", "numpy_minchar"} and all(len(ts) == 3 for ts in times.values())
    assert bench.time_in_shared_process(["numpy_hoisted", "no_such_implementation"], TINY, min_time=0.0,
                                        min_repeats=1) is None


def test_a_time_is_the_best_rounds_median():
    assert bench.best_round([[3.0, 1.0, 2.0], None, [5.0, 1.5, 1.6, 1.7]]) == 1.65
    assert bench.best_round([None, None]) is None


def test_steady_allocator_keeps_freed_memory_so_a_repeated_step_does_not_page_fault():
    """A "step" that makes eight 1 MiB arrays and drops them: by default glibc trims the freed top of its heap
    after every step, and the next step faults those pages in again (the kernel zero-fills each); with the
    steady thresholds the pages stay. Counted in fresh processes (ru_minflt during the fourth step)."""
    code = ("import resource, sys, numpy as np; from benchmarks.measure import steady_allocator\n"
            "if sys.argv[1] == 'steady': assert steady_allocator() is not None\n"
            "def step(): return [np.ones(1 << 18, np.float32) for _ in range(8)]\n"
            "for _ in range(3): step()\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "step()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)")
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True, cwd=ROOT).stdout) for mode in ("default", "steady")}
    pages = 8 * (1 << 20) // 4096
    assert faults["default"] > pages // 2 and faults["steady"] < pages // 20, faults


def test_run_times_in_rounds_and_compares_with_own_processes():
    from benchmarks.report import agreement_verdict
    impls = [bench.BY_KEY["numpy_minchar"], bench.BY_KEY["numpy_hoisted"]]
    results = bench.run_benchmark([TINY], implementations=impls, min_time=0.0, min_repeats=2, memory=False,
                                  overhead=False, compare="process", warmup_time=0.0, log=lambda *_: None, rounds=2)
    (row,) = results["rows"]
    assert row["second_way"]["how"] == "process" and set(row["agreement"]) == {"numpy_minchar", "numpy_hoisted"}
    for key, (ratio, ok) in row["agreement"].items():
        assert len(row["round_medians_s"][key]) == len(row["second_way"]["round_medians_s"][key]) == 2
        assert row["median_s"][key] == min(row["round_medians_s"][key])
        assert row["second_way"]["median_s"][key] == min(row["second_way"]["round_medians_s"][key])
        assert ratio == pytest.approx(row["median_s"][key] / row["second_way"]["median_s"][key])
        assert ok == (abs(ratio - 1) <= 0.05)
        assert row["repeats"][key] == 4
    table = bench.markdown(results)
    assert "## Two ways agree? Time beside the others ÷ time in a fresh process of its own in every round" in table
    assert "in 2 rounds of fresh processes" in table and "glibc malloc: trim threshold 1024 MiB" in table
    assert agreement_verdict(results) in table and " of 2 cells" in agreement_verdict(results)
    interleaved = bench.run_benchmark([TINY], implementations=impls, min_time=0.0, min_repeats=2, memory=False,
                                      overhead=False, compare="interleaved", warmup_time=0.0, log=lambda *_: None)
    assert set(interleaved["rows"][0]["agreement"]) == {"numpy_minchar", "numpy_hoisted"}
    with pytest.raises(ValueError, match="bench --compare"):
        bench.run_benchmark([TINY], implementations=impls, compare="sometimes")


@pytest.mark.parametrize("module", ["benchmarks", "benchmarks.bench_bptt"])
def test_module_entry_points_run_the_bench_command(module):
    root = ROOT
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=root,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--compare" in done.stdout
    bad = subprocess.run([sys.executable, "-m", module, "--rows", "1,2,x,4"], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert bad.returncode == 2 and "bench --rows" in bad.stderr and "Traceback" not in bad.stderr


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


def test_compact_table_shows_medians_ratios_and_agreement():
    from benchmarks.report import compact_table
    results = {"implementations": {"tinygrad": "tinygrad_rnn", "torch_loop": "torch loop, CE/step",
                                   "numpy_hoisted": "numpy hoisted"},
               "rows": [{"label": "(1,25,16,4)", "median_s": {"tinygrad": 0.002, "torch_loop": 0.004,
                                                             "numpy_hoisted": 0.0005},
                         "agreement": {"tinygrad": (1.01, True), "torch_loop": (1.08, False)}}]}
    header, rule, row = compact_table(results)
    assert header == ("| (B,T,d,V) | tinygrad_rnn | torch loop, CE/step | numpy hoisted | engine ÷ torch loop | "
                      "engine ÷ hoisted | two ways agree |")
    assert rule.count("|") == header.count("|")
    assert row == "| (1,25,16,4) | 2 | 4 | 0.5 | 0.5× | 4× | ❌ torch loop, CE/step 1.08 |"


def test_chart_plots_each_implementation_relative_to_torch_loop_and_hoisted():
    pytest.importorskip("matplotlib")
    from benchmarks.report import chart_figure
    results = {"implementations": {"tinygrad": "tinygrad_rnn", "torch_loop": "torch loop, CE/step",
                                   "numpy_hoisted": "numpy hoisted"},
               "environment": {"blas": {"kernel": "Haswell", "threads": 2}, "cpu": "test CPU"},
               "rows": [{"label": "(32,50,128,65)", "flops": 2e8,
                         "median_s": {"tinygrad": 6.0, "torch_loop": 8.0, "numpy_hoisted": 3.0}},
                        {"label": "(1,25,16,4)", "flops": 5e4,
                         "median_s": {"tinygrad": 1.0, "torch_loop": 2.0, "numpy_hoisted": 0.1}}]}
    fig = chart_figure(results)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["(1,25,16,4)\n0.05 MFLOP", "(32,50,128,65)\n200 MFLOP"]
    lines = {line.get_label(): list(line.get_ydata()) for line in left.get_lines()
             if not line.get_label().startswith("_")}
    assert lines == {"tinygrad_rnn": [0.5, 0.75], "torch loop, CE/step": [1.0, 1.0], "numpy hoisted": [0.05, 0.375]}
    engine = next(line for line in right.get_lines() if line.get_label() == "tinygrad_rnn")
    assert list(engine.get_ydata()) == [10.0, 2.0] and engine.get_color() == "black"
    assert left.get_yscale() == "log" and right.get_title() == "relative to numpy hoisted"
