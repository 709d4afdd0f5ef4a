"""`tinygrad-rnn render`: every numeric flag is range-checked while the command line is parsed (argparse
types), so a bad value is one stderr line naming the flag, exit 2, before anything is built or written."""
import contextlib
import io

import pytest

import viz.examples
from test_cli_errors import assert_one_line_error, run_cli
from tinygrad_rnn.cli import build_parser, parse_arguments

PARSER = build_parser()


def parsed(*argv):
    """(namespace or None, stderr, exit code) of parsing `render argv` alone, as the CLI does first."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parse_arguments(PARSER, ["render", *argv]), err.getvalue(), None
        except SystemExit as e:
            return None, err.getvalue(), e.code


@pytest.mark.parametrize("flag,value,fragment", [
    ("--steps", "0", "expected an integer ≥ 1"), ("--steps", "-3", "expected an integer ≥ 1"),
    ("--steps", "2.5", "expected an integer"), ("--steps", "", "expected an integer"),
    ("--hidden", "0", "expected an integer ≥ 1"), ("--seed", "-1", "expected an integer ≥ 0"),
    ("--max-steps", "1", "≥ 2"), ("--max-steps", "-2", "expected an integer ≥ 0"),
])
def test_render_flags_are_range_checked_while_parsing(flag, value, fragment, tmp_path, monkeypatch, capsys):
    args, err, code = parsed(f"{flag}={value}")
    assert args is None and code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tinygrad-rnn render: error: argument {flag}: "), err
    assert fragment in lines[0], lines[0]
    # the whole command: refused before the network is built, nothing written
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(viz.examples, "example", lambda *a, **k: pytest.fail("built the network"))
    assert_one_line_error(*run_cli(capsys, "render", f"{flag}={value}", "-o", "g.dot"), f"argument {flag}", fragment)
    assert list(tmp_path.iterdir()) == []


def test_steps_in_range_parse_and_the_upper_end_is_refused_with_its_estimate(tmp_path, monkeypatch, capsys):
    args, err, _ = parsed("--steps", "1")
    assert args.steps == 1 and err == ""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(viz.examples, "example", lambda *a, **k: pytest.fail("built the network"))
    # beyond MAX_STEPS: after parsing (its message estimates the time), still before any work
    assert_one_line_error(*run_cli(capsys, "render", "--steps", "200000", "-o", "g.dot"), "use --steps ≤ 100,000")
    assert list(tmp_path.iterdir()) == []
