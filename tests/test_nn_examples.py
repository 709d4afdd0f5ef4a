"""The four architecture examples under examples/ run end to end (shortened) and learn something."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,kwargs,better_than", [
    ("many_to_many_tagging", {"steps": 60}, 0.4),          # chance ≈ 0.23
    ("many_to_one_classification", {"steps": 60}, 0.7),    # chance 0.5
    ("seq2seq_reverse", {"steps": 40, "length": 3}, 0.0),
])
def test_example_runs_and_learns(name, kwargs, better_than, capsys):
    score = load(name).main(**kwargs)
    assert score > better_than
    assert capsys.readouterr().out


def test_generation_example_samples_at_three_temperatures(capsys):
    history = load("one_to_many_generation").main(updates=5)
    out = capsys.readouterr().out
    assert len(history.losses) == 5 and out.count("temperature") == 3
