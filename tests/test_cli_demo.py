"""`tinygrad-rnn demo` through tinygrad_rnn.cli.main: it trains "hell" → "ello", gradchecks the BPTT gradient
and prints the per-step table ‖∂L/∂W(t)‖ whose copies sum to ∂L/∂W. The printed numbers are checked against
facts of the lecture, not against a stored copy of the output."""
import re

import numpy as np
import pytest

from tinygrad_rnn.cli import main


def _table(text):
    rows = [(int(t), float(v)) for t, v in re.findall(r"^\s+(\d+)\s+([\d.]+)\s*$", text, flags=re.M)]
    total = re.search(r"Σ_t\s+([\d.]+)\s+= ‖∂L/∂W‖ ([\d.]+)\s+\(max \|.*\| = ([\d.e+-]+)\)", text)
    return rows, total


def test_demo_trains_checks_and_prints_the_table(capsys):
    assert main(["demo"]) == 0
    text = capsys.readouterr().out
    assert "predicts 'ello' from 'hell'" in text
    assert "gradcheck" in text and "match" in text
    losses = [float(v) for v in re.findall(r"L = ([\d.]+)", text)]
    assert len(losses) >= 2 and losses[-1] < 0.1 < losses[0]
    rows, total = _table(text)
    assert [t for t, _ in rows] == [1, 2, 3, 4]  # one row per step of "hell"
    norms = np.array([v for _, v in rows])
    assert norms[0] == 0.0  # s(0) = 0, so ∂L/∂W(1) = s(0)ᵀ δ(1) = 0
    assert np.all(norms[1:] > 0)
    assert total is not None
    sum_norm, shared_norm, diff = (float(v) for v in total.groups())
    assert sum_norm == shared_norm > 0
    assert norms.sum() >= sum_norm - 1e-6  # triangle inequality: Σ‖g_t‖ ≥ ‖Σ g_t‖
    assert diff <= 1e-12


def test_demo_options(capsys):
    assert main(["demo", "--hidden", "4", "--epochs", "2", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "d = 4" in text and "after 2 epochs" in text
    rows, total = _table(text)
    assert [t for t, _ in rows] == [1, 2, 3, 4] and total is not None


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _module_cli(*argv, cwd, pythonpath=()):
    """`python -m tinygrad_rnn ARGV` in a fresh interpreter, tinygrad_rnn taken from this checkout."""
    import os
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(root)]))
    return subprocess.run([sys.executable, "-m", "tinygrad_rnn", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_bare_command_prints_help_and_module_entry_point_works(tmp_path):
    done = _module_cli(cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: tinygrad-rnn")
    for command in ("demo", "render", "analyze", "train", "sample", "task", "bench"):
        assert f"    {command} " in done.stdout


def test_version(capsys):
    import tinygrad_rnn
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"tinygrad-rnn {tinygrad_rnn.__version__}\n"


def test_unknown_option_of_a_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--no-such-option"])
    assert info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
