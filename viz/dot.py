"""View -> graphviz.Digraph: one cluster per time step, shared parameters outside, gradient heat.

Colour legend (when the drawing has gradients): copies, states and other tensors with a gradient are
filled by ‖∂L/∂·‖ on a log scale from pale yellow (smallest, vanishing) to dark red (largest); edges
take the colour and width of the gradient of their tail, the value whose gradient flows back along them.
Grey: no gradient reached it. Without gradients: shared parameters blue, copies light blue, states green,
inputs white, losses pink.
"""
import math

from .layout import Layout

# ColorBrewer YlOrRd: light = small gradient, dark = large; readable in print and for colour-blind readers
HEAT = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026"]
NO_GRAD = "#e0e0e0"
FONT = "Helvetica"

_FILL = {"param": "#9fc5e8", "copy": "#d9e8f6", "input": "#ffffff", "state": "#d9ead3", "value": "#ffffff",
         "loss": "#f4cccc", "op": "#eeeeee", "fold": "#ffffff"}
_SHAPE = {"param": "box", "copy": "box", "input": "ellipse", "state": "ellipse", "value": "ellipse",
          "loss": "box", "op": "box", "fold": "box"}
_STYLE = {"param": "rounded,filled,bold", "copy": "rounded,filled", "input": "filled", "state": "filled,bold",
          "value": "filled", "loss": "filled", "op": "rounded,filled", "fold": "dashed,rounded"}
_EDGE_STYLE = {"data": {}, "weight": {"color": "#6d9eeb"}, "state": {"penwidth": "2.2"},
               "sum": {"style": "dashed", "color": "#3c78d8", "fontcolor": "#1c4587", "constraint": "false"}}


class LogScale:
    """Maps gradient norms to [0, 1] on a log scale between the smallest and largest positive norm drawn."""

    def __init__(self, norms):
        positive = [n for n in norms if n is not None and n > 0 and math.isfinite(n)]
        self.empty = not positive
        self.lo = min(positive) if positive else 1.0
        self.hi = max(positive) if positive else 1.0

    def __call__(self, norm):
        if norm is None or not norm > 0 or not math.isfinite(norm):
            return None
        if self.hi <= self.lo * (1 + 1e-12):
            return 1.0
        x = (math.log10(norm) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return min(1.0, max(0.0, x))

    def ticks(self, n=5):
        if self.hi <= self.lo * (1 + 1e-12):
            return [self.hi]
        return [self.lo * (self.hi / self.lo) ** (k / (n - 1)) for k in range(n)]


def heat(x):
    """Colour at position x in [0, 1] of the HEAT ramp, as #rrggbb."""
    x = min(1.0, max(0.0, x)) * (len(HEAT) - 1)
    k = min(int(x), len(HEAT) - 2)
    f = x - k
    a, b = HEAT[k], HEAT[k + 1]
    rgb = [round(int(a[i:i + 2], 16) * (1 - f) + int(b[i:i + 2], 16) * f) for i in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def fmt(x):
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}".replace("e-0", "e-").replace("e+0", "e")


def to_digraph(view, rankdir=None):
    """graphviz.Digraph of a View (see viz.view). Nothing is rendered: that needs Graphviz's `dot` program.

    rankdir: "BT" (default: as on the slides, inputs at the bottom and time running left to right, the
    recurrence chain s(0) → a(1) → s(1) → a(2) → … on one row) or "TB", "LR", "RL" (dot's own
    layout).
    """
    try:
        import graphviz
    except ImportError:
        raise ImportError("viz needs the graphviz Python package: pip install graphviz") from None
    rankdir = rankdir or "BT"
    if rankdir not in ("BT", "TB", "LR", "RL"):
        raise ValueError(f"viz: rankdir must be one of BT, TB, LR, RL, got {rankdir!r}")
    g = graphviz.Digraph(view.kind)
    g.attr(rankdir=rankdir, fontname=FONT, fontsize="15", labelloc="t", label=_dot_text(view.title), newrank="true",
           nodesep="0.22", ranksep="0.4")
    g.attr("node", fontname=FONT, fontsize="12", margin="0.06,0.03", height="0.3")
    g.attr("edge", fontname=FONT, fontsize="11", arrowsize="0.7", color="#555555")
    folds = {f[0] for f in view.folded}  # a fold's Σ over hundreds of copies would flatten the scale
    scale = LogScale([n.grad_norm for n in view.nodes.values()]
                     + [e.grad_norm for e in view.edges if e.tail not in folds]) if view.show_grads else None
    layout = Layout(view) if view.steps else None

    def node(graph, n):
        graph.node(n.id, _node_label(n, scale), **_node_attrs(n, scale))

    # the initial state first, then the steps in time order (the fold in its place), then the rest
    outside = list(view.outside)
    first = [i for i in outside if layout and i in layout.chain]
    for i in first:
        node(g, view.nodes[i])
    fold_after = _last_before_fold(view) if view.folded else None
    for t, ids in view.steps.items():
        with g.subgraph(name=f"cluster_{t}") as c:
            c.attr(label=f"t = {t}", style="rounded", color="#999999", fontcolor="#333333", fontsize="14",
                   labelloc="b" if rankdir == "BT" else "t", margin="10")
            for i in ids:
                node(c, view.nodes[i])
        if t == fold_after:
            _fold_box(g, view, node)
    if view.folded and fold_after is None:
        _fold_box(g, view, node)
    for i in outside:
        if i not in first:
            node(g, view.nodes[i])

    for e in view.edges:
        attrs = _edge_attrs(e, scale, view.kind)
        if layout and (e.tail, e.head) in layout.loose:
            attrs["constraint"] = "false"
        if layout and e.kind == "state":
            # with newrank, dot draws a flat edge from one box into the next twice (Graphviz 2.43) unless
            # it is written head -> tail with dir=back: the same arrow s(t−1) → a(t) on the page
            attrs["dir"] = "back"
            g.edge(e.head, e.tail, **attrs)
            continue
        g.edge(e.tail, e.head, **attrs)
    if scale is not None:
        g.node("legend", _legend(scale), shape="plaintext", fontsize="10", **{"class": "legend"})
    if layout:
        layout.apply(g, "legend" if scale is not None else None)
    return g


def _dot_text(*lines):
    """Lines of text shown as they are: backslashes literal (DOT reads \\n, \\l, \\N… in labels), joined by
    DOT's own "\\n" line break (not a newline character: one statement per line of source), quotes
    escaped by the graphviz package's quoting, and never taken for HTML even when it looks like '<…>'."""
    import graphviz
    return graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))


def _node_label(n, scale):
    lines = [n.label]
    if n.kind == "copy" and scale is not None and n.grad_norm is not None:
        lines.append(f"‖∂L/∂{n.label}‖ = {fmt(n.grad_norm)}")
    if n.note:
        lines.append(n.note)
    return _dot_text(*lines)


def _node_attrs(n, scale):
    attrs = {"shape": _SHAPE[n.kind], "style": _STYLE[n.kind], "fillcolor": _FILL[n.kind], "class": n.kind}
    if scale is not None:
        x = scale(n.grad_norm)
        if n.grad_norm is not None or n.kind in ("copy", "state"):
            attrs["fillcolor"] = NO_GRAD if x is None else heat(x)
            if x is not None and x > 0.72:
                attrs["fontcolor"] = "white"
        if n.grad_norm is not None:
            attrs["tooltip"] = _dot_text(f"‖∂L/∂{n.label}‖ = {fmt(n.grad_norm)}")
    if n.kind == "copy":
        attrs["fontsize"] = "10"
    if n.kind == "fold":
        attrs["fontsize"] = "13"
    return attrs


def _edge_attrs(e, scale, view_kind):
    attrs = dict(_EDGE_STYLE[e.kind])
    attrs["class"] = e.kind
    if e.label:
        attrs["label"] = _dot_text(f" {e.label} ")
    if view_kind == "rolled" and e.kind == "weight":
        attrs["color"] = "#555555"
    if scale is not None:
        x = scale(e.grad_norm)
        if x is not None:
            attrs.update(color=heat(0.3 + 0.7 * x), penwidth=f"{1 + 2.5 * x:.2f}")  # faintest still visible
    return attrs


def _fold_box(g, view, node):
    fold_id, first, last, count = view.folded[0]
    with g.subgraph(name="cluster_fold") as c:  # a box of its own keeps it between the steps
        c.attr(label=f"t = {first} … {last}", style="dashed,rounded", color="#999999", fontcolor="#333333",
               fontsize="14", margin="10")
        node(c, view.nodes[fold_id])


def _last_before_fold(view):
    first_folded = view.folded[0][1]
    before = [t for t in view.steps if t < first_folded]
    return before[-1] if before else None


def _legend(scale):
    cells = []
    for v in ([] if scale.empty else scale.ticks()):
        x = scale(v)
        colour = heat(x)
        text = f'<FONT COLOR="white">{fmt(v)}</FONT>' if x > 0.72 else fmt(v)
        cells.append(f'<TD BGCOLOR="{colour}">{text}</TD>')
    cells.append(f'<TD BGCOLOR="{NO_GRAD}">0 / none</TD>')
    return ('<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
            f'<TR><TD COLSPAN="{len(cells)}">gradient norm ‖∂L/∂·‖ (log scale)</TD></TR>'
            f'<TR>{"".join(cells)}</TR></TABLE>>')
