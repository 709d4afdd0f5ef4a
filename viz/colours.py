"""Gradient colours: matplotlib's colormap CMAP on a LogNorm between the smallest and largest norm drawn.

CMAP is the map of the analysis heat maps (tinygrad_rnn.analysis.plots: viridis + LogNorm), so a copy
W(t) in a drawing and its column in the contributions heat map have the same colour. Two states sit
outside the map: a true zero (ZERO, grey: ∂L/∂W(1) = s(0)ᵀ δ(1) = 0) and "not recorded" (NOT_RECORDED,
white with a dashed border: viz could not recover that tensor's gradient). matplotlib is imported only
when a drawing has gradients to colour.
"""
import math

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
            import matplotlib
            from matplotlib.colors import LogNorm
            self._map = matplotlib.colormaps[CMAP]
            single = self.hi <= self.lo * (1 + 1e-12)  # one value: the top colour
            self._norm = LogNorm(vmin=self.hi / 10 if single else self.lo, vmax=self.hi)
            # every norm of the drawing through LogNorm and the map at once (one by one, matplotlib's masked
            # arrays cost a millisecond each)
            values = sorted(set(positive))
            self._positions = dict(zip(values, np.clip(self._norm(np.array(values)).filled(0.0), 0.0, 1.0)))

    def position(self, norm):
        """Where `norm` falls on the map, in [0, 1]; None for None, zero, negative or non-finite."""
        if self.empty or norm is None or not norm > 0 or not math.isfinite(norm):
            return None
        x = self._positions.get(norm)
        return float(x) if x is not None else min(1.0, max(0.0, float(self._norm(norm))))

    def colour(self, norm):
        """#rrggbb of `norm`: ZERO for a zero gradient, NOT_RECORDED for None."""
        if norm is None:
            return NOT_RECORDED
        x = self.position(norm)
        if x is None:
            return ZERO
        from matplotlib.colors import to_hex
        return to_hex(self._map(x))

    def ticks(self, n=4):
        if self.empty:
            return []
        if self.hi <= self.lo * (1 + 1e-12):
            return [self.hi]
        return [self.lo * (self.hi / self.lo) ** (k / (n - 1)) for k in range(n)]


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
