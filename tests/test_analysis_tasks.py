"""`tinygrad-rnn task … --analyze`: one figure of ‖∂L_T/∂s_k‖ against the gap for every cell, at
initialisation and after training, whose plotted lines are the analysis' own numbers."""
import numpy as np
import pytest

from tinygrad_rnn import train
from tinygrad_rnn.analysis import gradient_vs_gap, record
from tinygrad_rnn.analysis.tasks import probe_batch
from tinygrad_rnn.cli import main


def _captured_figures(monkeypatch):
    figures = []
    original = train.save_figure

    def save(fig, path, *args, **kwargs):
        figures.append((fig, path))
        return original(fig, path, *args, **kwargs)
    monkeypatch.setattr(train, "save_figure", save)
    return figures


def test_task_adding_analyze_plots_the_gradient_against_the_gap_for_each_cell(tmp_path, monkeypatch, capsys):
    figures = _captured_figures(monkeypatch)
    out = tmp_path / "gaps.png"
    assert main(["task", "adding", "--T", "6", "--cell", "rnn", "lstm", "--steps", "3", "--hidden", "4",
                 "--analyze", str(out), "--no-progress"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert len(figures) == 1 and str(figures[0][1]) == str(out) and out.read_bytes()[:4] == b"\x89PNG"
    ax = figures[0][0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["rnn at init", "rnn after 3 updates", "lstm at init", "lstm after 3 updates"]
    assert ax.get_yscale() == "log" and "Adding problem, T = 6, d = 4" in ax.get_title()
    xs, y, keywords = probe_batch("adding", 6, seed=0)
    for cell in ("rnn", "lstm"):  # the same seeds: the same models, so the same curves
        trained, _ = train.train_task("adding", 6, cell, 4, 3, seed=0, progress=False)
        for when, model in (("at init", train.task_model("adding", cell, 4, 0)), ("after 3 updates", trained)):
            gaps, norms = gradient_vs_gap(record(model, xs, y, **keywords), part="state")
            line = lines[f"{cell} {when}"]
            np.testing.assert_array_equal(line.get_xdata(), gaps)
            np.testing.assert_allclose(line.get_ydata(), norms, rtol=1e-12)
            assert gaps[0] == 0 and gaps[-1] == 5
    assert lines["rnn at init"].get_linestyle() != lines["rnn after 3 updates"].get_linestyle()


def test_task_analyze_checks_its_output_before_training(tmp_path, capsys):
    assert main(["task", "copy", "--T", "3", "--cell", "gru", "--steps", "1", "--hidden", "3",
                 "--analyze", str(tmp_path / "gaps.txt"), "--no-progress"]) == 2
    assert "--analyze" in capsys.readouterr().err
    same = str(tmp_path / "same.png")
    assert main(["task", "copy", "--T", "3", "--steps", "1", "--plot", same, "--analyze", same]) == 2
    assert "same file" in capsys.readouterr().err


def test_task_copy_analyze_writes_the_default_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["task", "copy", "--T", "3", "--cell", "gru", "--steps", "2", "--hidden", "3", "--analyze",
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "copy-gradient-vs-gap.png").exists()
    printed = capsys.readouterr().out
    assert "gru at init: ‖∂L_T/∂s_k‖" in printed and "at gap 22" in printed  # T + 20 steps, gaps 0 … 22


def test_probe_batch_refuses_an_unknown_task():
    with pytest.raises(ValueError, match="task must be 'adding' or 'copy'"):
        probe_batch("sort", 5)
