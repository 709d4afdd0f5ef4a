"""The README's viz section runs as printed (in a fresh folder), and the figures it shows exist and read on
a page (at most 1600 px wide)."""
import pathlib
import re
import shutil

import pytest

pytest.importorskip("graphviz")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECTION = re.search(r"## See the unrolled network \(`viz`\)\n(.*?)\n## ", (ROOT / "README.md").read_text("utf-8"),
                    re.S).group(1)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_the_viz_snippet_runs_as_printed(tmp_path, monkeypatch):
    (code,) = re.findall(r"```python\n(.*?)```", SECTION, re.S)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README viz section", "exec"), scope)
    assert scope["g"].source.startswith("digraph")
    assert (tmp_path / "hello-rolled.svg").read_text().startswith("<?xml")
    assert (tmp_path / "hello-W.pdf").read_bytes()[:5] == b"%PDF-"
    assert scope["out"].states[1].grad is None and "tooltip=\"‖∂L/∂s(1)‖" in scope["g"].source


def test_the_figures_exist_and_fit_a_page():
    import matplotlib.image as mpimg
    figures = re.findall(r"\]\((docs/[\w.-]+\.png)\)", SECTION)
    assert figures == ["docs/hello-unrolled.png", "docs/hello-rolled.png", "docs/hello-wrapped.png",
                       "docs/torchviz-vs-viz.png"]
    for figure in figures:
        assert mpimg.imread(ROOT / figure).shape[1] <= 1600, figure
