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


def test_torchviz_is_a_docs_extra_and_never_used_by_the_package():
    # torchviz only makes the side-by-side figure (docs/make_figures.py, the `docs` extra)
    sources = [p for folder in ("viz", "tinygrad_rnn") for p in (ROOT / folder).rglob("*.py")]
    imports = re.compile(r"^\s*(import|from)\s+torchviz\b", re.M)
    assert sources and not [p for p in sources if imports.search(p.read_text("utf-8"))]
    assert "torchviz" in (ROOT / "docs" / "make_figures.py").read_text("utf-8")
    setup = (ROOT / "setup.cfg").read_text("utf-8")
    docs_extra = re.search(r"\ndocs =\n((?:[ \t]+\S.*\n)+)", setup)
    assert docs_extra and "torchviz" in docs_extra.group(1), "torchviz belongs to the docs extra"
