"""Gradient colours: matplotlib's colormap CMAP on a LogNorm between the smallest and largest norm drawn.

CMAP is the map of the analysis heat maps (tinygrad_rnn.analysis.plots: viridis + LogNorm), so a copy
W(t) in a drawing and its column in the contributions heat map have the same colour. Two states sit
outside the map: a true zero (ZERO, grey: ∂L/∂W(1) = s(0)ᵀ δ(1) = 0) and "not recorded" (NOT_RECORDED,
white with a dashed border: viz could not recover that tensor's gradient).

Importing matplotlib costs a quarter of a second (its rc and font setup), more than drawing T = 1000. So
unless matplotlib is already imported, the map's 256 colours are read from matplotlib's own listed-colormap
data file (matplotlib/_cm_listed.py, found without importing the package), and LogNorm and the lookup are
done here the way matplotlib does them (log10, then floor(x · 256), 1.0 in the last colour): the same hex
colours, which tests/test_viz.py checks against matplotlib itself. If that file is not laid out as expected,
matplotlib is imported after all.
"""
import ast
import importlib.util
import math
import os
import re
import sys

import numpy as np

CMAP = "viridis"
ZERO = "#d9d9d9"
NOT_RECORDED = "#ffffff"
TITLE = "‖∂L/∂·‖ (log)"


class LogScale:
    """norm -> #rrggbb through CMAP and a LogNorm over the positive, finite norms given."""

    def __init__(self, norms):
        positive = [n for n in norms if n is not None and n > 0 and math.isfinite(n)]
        self.empty = not positive
        self.lo = min(positive) if positive else 1.0
        self.hi = max(positive) if positive else 1.0
        if not self.empty:
            self._colours = colormap_hex(CMAP)
            single = self.hi <= self.lo * (1 + 1e-12)  # one value: the top colour
            self._vmin = self.hi / 10 if single else self.lo

    def position(self, norm):
        """Where `norm` falls on the map, in [0, 1] (matplotlib's LogNorm, clipped); None for None, zero,
        negative or non-finite."""
        if self.empty or norm is None or not norm > 0 or not math.isfinite(norm):
            return None
        lo, hi = np.log10([self._vmin, self.hi])
        return min(1.0, max(0.0, float((np.log10(norm) - lo) / (hi - lo))))

    def colour(self, norm):
        """#rrggbb of `norm`: ZERO for a zero gradient, NOT_RECORDED for None."""
        if norm is None:
            return NOT_RECORDED
        x = self.position(norm)
        if x is None:
            return ZERO
        n = len(self._colours)  # matplotlib's lookup of a float: floor(x · N), x = 1 in the last colour
        return self._colours[min(int(x * n), n - 1)]

    def ticks(self, n=4):
        if self.empty:
            return []
        if self.hi <= self.lo * (1 + 1e-12):
            return [self.hi]
        return [self.lo * (self.hi / self.lo) ** (k / (n - 1)) for k in range(n)]


_HEX = {}  # colormap name -> its colours as #rrggbb, read once per process


def colormap_hex(name):
    """The colours of matplotlib's listed colormap `name` as #rrggbb strings (see the module docstring)."""
    if name not in _HEX:
        rgb = None if "matplotlib" in sys.modules else _listed_data(name)
        if rgb is None:
            import matplotlib
            rgb = matplotlib.colormaps[name].colors
        _HEX[name] = ["#" + "".join(format(round(float(v) * 255), "02x") for v in c[:3]) for c in rgb]
    return _HEX[name]


def _listed_data(name):
    """The `_<name>_data = [[r, g, b], …]` list of matplotlib/_cm_listed.py, or None when not found so."""
    spec = importlib.util.find_spec("matplotlib")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "_cm_listed.py")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        found = re.search(rf"^_{re.escape(name)}_data = (\[.*?\]\])\s*$", text, re.M | re.S)
        rgb = ast.literal_eval(found.group(1)) if found else None
    except (OSError, ValueError, SyntaxError):
        return None
    ok = isinstance(rgb, list) and len(rgb) >= 2 and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, float) and 0 <= v <= 1 for v in c) for c in rgb)
    return rgb if ok else None


def text_colour(fill):
    """Black or white, whichever reads on `fill` (#rrggbb), by its relative luminance."""
    r, g, b = (int(fill[k:k + 2], 16) / 255 for k in (1, 3, 5))
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 else "black"


def fmt(x):
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}".replace("e-0", "e-").replace("e+0", "e")


def colour_bar(scale):
    """An HTML-like label: the colour bar with its ticks, then the zero and the not-recorded swatches."""
    cells = []
    for v in scale.ticks():
        fill = scale.colour(v)
        cells.append(f'<TD BGCOLOR="{fill}"><FONT COLOR="{text_colour(fill)}">{fmt(v)}</FONT></TD>')
    cells.append(f'<TD BGCOLOR="{ZERO}">0</TD>')
    cells.append(f'<TD BGCOLOR="{NOT_RECORDED}" STYLE="dashed">not<BR/>recorded</TD>')
    return ('<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
            f'<TR><TD COLSPAN="{len(cells)}">{TITLE}</TD></TR>'
            f'<TR>{"".join(cells)}</TR></TABLE>>')
