"""viz: colours without importing matplotlib (identical to matplotlib's), and T = 1000 drawn fast in a fresh process."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("graphviz")
matplotlib = pytest.importorskip("matplotlib")

from viz import colours  # noqa: E402
from viz.colours import CMAP, LogScale, colormap_hex  # noqa: E402


def test_the_colormap_read_from_matplotlibs_data_file_is_matplotlibs():
    rgb = colours._listed_data(CMAP)
    assert np.array_equal(np.array(rgb), matplotlib.colormaps[CMAP].colors)
    assert colours._listed_data("no_such_map") is None


def test_log_scale_colours_equal_matplotlib_lognorm_and_colormap():
    from matplotlib.colors import LogNorm, to_hex
    rng = np.random.default_rng(0)
    norms = list(10 ** rng.uniform(-6, 3, 3000)) + [1e-6, 1e3]
    scale = LogScale(norms)
    norm, cmap = LogNorm(vmin=min(norms), vmax=max(norms)), matplotlib.colormaps[CMAP]
    expected = [to_hex(c) for c in cmap(norm(np.array(norms)))]
    assert [scale.colour(n) for n in norms] == expected


def test_colours_from_the_file_path_match_the_import_path(monkeypatch):
    from_import = list(colormap_hex(CMAP))  # matplotlib is imported in this process: read from it
    monkeypatch.setattr(colours, "_HEX", {})
    monkeypatch.delitem(sys.modules, "matplotlib")  # as in a fresh process: read from the data file
    assert colormap_hex(CMAP) == from_import


FRESH = """
import sys, time
import viz
L, _ = viz.example("deep", steps=1000)
start = time.perf_counter()
source = viz.draw(L).source
took = time.perf_counter() - start
assert "fillcolor=\\"#" in source and "‖∂L/∂·‖ (log)" in source
print(took, "matplotlib" in sys.modules)
"""


def test_t1000_first_draw_in_a_fresh_process_is_fast_and_imports_no_matplotlib():
    runs = [subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert all(imported == "False" for _, imported in runs), runs
    assert min(float(took) for took, _ in runs) < 0.6, runs  # ~0.25 s alone; generous for a shared machine


def test_drawings_and_the_analysis_heat_map_share_one_colormap_and_a_log_norm():
    # the issue: "the same map the analysis heat maps use" — read off the heat map plot_contributions makes
    from matplotlib.colors import LogNorm

    import viz
    from tinygrad_rnn.analysis.plots import plot_contributions
    L, out = viz.example("hello")
    fig = plot_contributions(out)
    (image,) = fig.axes[0].images
    assert image.get_cmap().name == CMAP and isinstance(image.norm, LogNorm)
    assert "‖∂L/∂·‖ (log)" in viz.draw(L).source  # the drawing's colour bar says which norm, on a log scale
