"""Fuzzed command-line values (issue 16's "more fuzzed misuse"): every numeric flag of every subcommand,
given any string, is either accepted with a value in the flag's range or refused by argparse in one line
that names the flag (exit code 2) — never a traceback, never an out-of-range value reaching the work.
Only the parsing runs (cli.parse_arguments, as the command does), so thousands of values
take about a second."""
import contextlib
import io
import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_rnn.cli import build_parser, parse_arguments

# what a subcommand needs besides the fuzzed flag for its parser to accept the rest of the line
REQUIRED = {"sample": ["--load", "x.npz"], "task": ["adding"]}
RANGE_NAME = re.compile(r"integer ≥ (-?\d+)")

PARSER = build_parser()
FLAG_VALUES = 1500  # fuzzed (flag, value) pairs
TOKEN_SOUPS = 600   # fuzzed command lines of flags and values in any order


def _numeric_flags():
    """(subcommand, flag, type) of every option whose value argparse converts."""
    flags = []
    for command, parser in PARSER.subcommand_parsers.items():
        for action in parser._actions:
            if action.option_strings and action.type is not None and action.choices is None:
                flags.append((command, action.option_strings[-1], action.type))
    return flags


NUMERIC_FLAGS = _numeric_flags()


def _in_range(kind, value):
    """Whether an accepted value is one the flag's type promises (its name says the range)."""
    name = getattr(kind, "__name__", "")
    lower = RANGE_NAME.fullmatch(name)
    if lower:
        return type(value) is int and value >= int(lower.group(1))
    if name == "positive_finite":
        return isinstance(value, float) and 0 < value < math.inf
    if name == "non_negative_finite":
        return isinstance(value, float) and 0 <= value < math.inf
    if name == "max_steps_type":  # render --max-steps: 0 draws every step, else at least 2
        return type(value) is int and (value == 0 or value >= 2)
    raise AssertionError(f"the numeric flag type {name!r} says no range: give it one (cli_checks)")


def parse(argv):
    """(namespace or None, stderr, exit code) of parsing `argv` as cli._main does, before any work."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parse_arguments(PARSER, argv), err.getvalue(), None
        except SystemExit as e:
            return None, err.getvalue(), e.code


SPECIAL = ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e309", "-1e309", "1e-320", "0", "-0",
           "-0.0", "0x10", "1_000", "1__0", " 7 ", "٣", "1e3", "3.0", "2**10", "", " ", "-", "--", "-1", "+5",
           "9" * 5000, "1" * 400 + ".5", "True", "None", "\x00", "5\n"]
VALUES = st.one_of(st.sampled_from(SPECIAL), st.integers(-10 ** 30, 10 ** 30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12),
                   st.from_regex(r"\A[-+]?[0-9_]{0,6}(\.[0-9]{0,3})?([eE][-+]?[0-9]{1,3})?\Z"))


def test_every_numeric_flag_is_fuzzed():
    assert len(NUMERIC_FLAGS) >= 40 and {c for c, _, _ in NUMERIC_FLAGS} >= {"demo", "render", "analyze", "train",
                                                                            "sample", "task", "bench"}


@settings(max_examples=FLAG_VALUES, deadline=None, derandomize=True)
@given(flag=st.sampled_from(NUMERIC_FLAGS), text=VALUES)
def test_a_numeric_flag_accepts_only_its_range_and_refuses_in_one_line_naming_it(flag, text):
    command, option, kind = flag
    argv = [command, *REQUIRED.get(command, []), f"{option}={text}"]  # '=' keeps "-1" or "--" its value
    args, err, code = parse(argv)
    if args is not None:
        destination = next(a.dest for a in PARSER.subcommand_parsers[command]._actions if option in a.option_strings)
        value = getattr(args, destination)
        assert _in_range(kind, value), f"{argv} accepted {value!r}"
        assert err == ""
    else:
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"tinygrad-rnn {command}: error: argument {option}"), lines[0]
        assert len(lines[0]) < 400, "the message repeats a huge value whole"


TOKENS = ["--steps", "--hidden", "--lr", "--clip", "--seed", "--save", "--plot", "--text", "--cell", "-o", "--T",
          "--format", "--load", "--n", "--temperature", "--min-time", "adding", "copy", "rnn", "1", "0", "-1",
          "nan", "x.npz", "=", "--", "-", "--help=1", "--version=2", "--no-progress", "--bogus", "é", ""]


@settings(max_examples=TOKEN_SOUPS, deadline=None, derandomize=True)
@given(command=st.sampled_from(sorted(PARSER.subcommand_parsers) + ["", "nope"]),
       tokens=st.lists(st.sampled_from(TOKENS), max_size=6))
def test_any_token_soup_parses_or_is_one_line_exit_2(command, tokens):
    args, err, code = parse([command, *tokens] if command else tokens)
    if args is None:
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("tinygrad-rnn"), err
        assert "Traceback" not in err and "usage:" not in err
