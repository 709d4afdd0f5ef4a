"""The README's code runs as printed (a newcomer copies it first)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs():
    block = re.search(r"## The idea in 16 lines\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 16
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    tape, W = namespace["tape"], namespace["W"]
    assert [c.name for c in tape.copies(W)] == ["W(1)", "W(2)", "W(3)", "W(4)"]


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
