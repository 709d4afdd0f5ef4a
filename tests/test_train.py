"""Training loop, char LM, tasks and the CLI subcommands train / sample / task on tiny settings."""
import numpy as np
import pytest

from tinygrad_rnn import cli, nn
from tinygrad_rnn.train import (History, load_char_lm, plot_losses, sample, task_baseline, train_char_lm,
                                train_loop, train_task)


def test_train_loop_records_history_and_rejects_nan():
    losses = iter([3.0, 2.0, 1.0])
    h = train_loop(lambda: next(losses), 3, tokens_per_step=10, progress=False, label="x")
    assert h.losses == [3.0, 2.0, 1.0] and h.tokens == 30 and h.final(2) == 1.5 and h.tokens_per_second > 0
    with pytest.raises(FloatingPointError, match="the loss became nan at update 1"):
        train_loop(lambda: float("nan"), 2, progress=False)


@pytest.mark.parametrize("cell,bptt", [("rnn", None), ("lstm", 4)])
def test_char_lm_loss_drops(cell, bptt):
    text = "abcabcabcabcabcabcabcabc" * 3
    model, vocab, h = train_char_lm(text, cell=cell, hidden=8, seq=8, bptt=bptt, batch=4, epochs=40, lr=0.05,
                                    progress=False)
    assert model.cell_type == cell and vocab.tokens == ["a", "b", "c"]
    assert h.final(5) < 0.5 * h.losses[0]
    assert h.tokens == len(h.losses) * 4 * (bptt or 8)
    assert sample(model, vocab, "ab", 6, temperature=0).startswith("abcabc")
    with pytest.raises(ValueError, match=r"not in the model's vocabulary: \['z'\]"):
        sample(model, vocab, "az")


def test_tasks_train_and_baselines():
    assert task_baseline("adding", 50) == pytest.approx(1 / 6)
    assert task_baseline("copy", 10) == pytest.approx(10 * np.log(8) / 30)
    model, h = train_task("adding", T=6, cell="gru", hidden=8, steps=5, batch=8, progress=False)
    assert len(h.losses) == 5 and isinstance(model, nn.SequenceClassifier)
    model, h = train_task("copy", T=3, cell="rnn", hidden=8, steps=3, batch=4, progress=False)
    assert len(h.losses) == 3 and isinstance(model, nn.SequenceTagger)


def test_plot_losses_writes_png(tmp_path):
    path = plot_losses([History([3, 2, 1, 0.5], 1.0, 40, "a"), History([3, 3, 2], 1.0, 30, "b")],
                       tmp_path / "c.png", baseline=2.5)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path == tmp_path / "c.png"


def test_cli_train_then_sample(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Beautiful is better than ugly. " * 4, encoding="utf-8")
    ckpt = tmp_path / "m.npz"
    code = cli.main(["train", "--text", str(text), "--cell", "gru", "--hidden", "8", "--seq", "10",
                     "--batch", "4", "--steps", "3", "--save", str(ckpt), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and ckpt.exists() and (tmp_path / "m.png").exists()
    assert "unigram entropy" in out and "tokens/s" in out and "after 3 updates" in out
    model, vocab, meta = load_char_lm(ckpt)
    assert model.cell_type == "gru" and meta["updates"] == 3 and "B" in vocab.tokens
    code = cli.main(["sample", "--load", str(ckpt), "--prime", "Beau", "--n", "15", "--seed", "0"])
    printed = capsys.readouterr().out.rstrip("\n")
    assert code == 0 and printed.startswith("Beau") and len(printed) == 19


def test_cli_sample_errors_are_one_line(tmp_path, capsys):
    ckpt = tmp_path / "m.npz"
    cli.main(["train", "--text", str(_write(tmp_path, "abab" * 10)), "--hidden", "4", "--seq", "5",
              "--steps", "1", "--save", str(ckpt), "--no-progress"])
    capsys.readouterr()
    assert cli.main(["sample", "--load", str(ckpt), "--prime", "xyz"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert cli.main(["sample", "--load", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "not a readable checkpoint" in err and err.count("\n") == 1
    nn.Linear(2, 2).save(tmp_path / "plain.npz")
    assert cli.main(["sample", "--load", str(tmp_path / "plain.npz")]) == 2
    assert "not a character-model checkpoint" in capsys.readouterr().err
    assert cli.main(["sample", "--load", str(tmp_path / "nope.npz")]) == 2


def test_cli_train_usage_errors(tmp_path, capsys):
    short = _write(tmp_path, "abc")
    assert cli.main(["train", "--text", str(short), "--seq", "10", "--no-progress"]) == 2
    assert "--seq 10 needs at least 11" in capsys.readouterr().err
    assert cli.main(["train", "--seq", "5", "--bptt", "6", "--no-progress"]) == 2
    assert "--bptt 6 must not exceed --seq 5" in capsys.readouterr().err
    from test_cli_errors import run_cli
    code, err = run_cli(capsys, "train", "--hidden", "0", "--no-progress")
    assert code == 2 and "argument --hidden: expected an integer ≥ 1, got 0" in err


def test_cli_task_compares_cells(tmp_path, capsys):
    plot = tmp_path / "adding.png"
    code = cli.main(["task", "adding", "--T", "5", "--cell", "rnn", "lstm", "--hidden", "4", "--steps", "3",
                     "--batch", "4", "--plot", str(plot), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and plot.exists()
    assert "memoryless guess scores 0.1667" in out and "rnn :" in out and "lstm:" in out
    assert cli.main(["task", "copy", "--T", "2", "--hidden", "4", "--steps", "1", "--batch", "2",
                     "--no-progress"]) == 0
    from test_cli_errors import run_cli
    code, err = run_cli(capsys, "task", "copy", "--threads", "-1", "--no-progress")
    assert code == 2 and "argument --threads: expected an integer ≥ 0, got -1" in err


@pytest.mark.parametrize("argv,expected", [([], 1), (["--threads", "2"], 2), (["--threads", "0"], None)])
def test_cli_blas_threads_default_to_one(monkeypatch, capsys, argv, expected):
    # one BLAS thread by default: with two, a busy 2-core machine ran `train` 4x and the LSTM task 10x slower
    from threadpoolctl import threadpool_info

    from tinygrad_rnn import train
    outside = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    seen = []

    def fake_train_task(*args, **kwargs):
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
        return None, History([0.1], 1.0, 1, "rnn")
    monkeypatch.setattr(train, "train_task", fake_train_task)
    assert cli.main(["task", "adding", "--cell", "rnn", "--no-progress", *argv]) == 0
    assert seen == [{expected} if expected else outside]
    assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == outside  # restored


def _write(tmp_path, text):
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_plot_losses_returns_a_figure_of_the_losses_without_pyplot():
    # a subprocess: pyplot must not be imported (it would pick a backend; a notebook keeps its own)
    import subprocess
    import sys
    code = """
import sys
from tinygrad_rnn.train import History, plot_losses
fig = plot_losses([History([3, 2, 1, 0.5], 1.0, 40, "a")], baseline=2.5, ylabel="mse")
ax, = fig.axes
raw, smooth, base = ax.get_lines()
assert list(raw.get_ydata()) == [3, 2, 1, 0.5] and list(base.get_ydata()) == [2.5, 2.5]
assert ax.get_ylabel() == "mse" and ax.get_yscale() == "log"
assert "matplotlib.pyplot" not in sys.modules, "plot_losses imported pyplot"
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "ok\n", run.stderr


def test_progress_bar_only_when_asked(monkeypatch, capsys):
    import tqdm.auto

    def no_bar(*args, **kwargs):
        raise AssertionError("progress=False made a progress bar")
    monkeypatch.setattr(tqdm.auto, "tqdm", no_bar)
    assert train_loop(lambda: 1.0, 3, progress=False).losses == [1.0] * 3
    monkeypatch.undo()
    assert train_loop(lambda: 1.0, 3, desc="bar-shown", progress=True).losses == [1.0] * 3
    assert "bar-shown" in capsys.readouterr().err
