"""View -> graphviz.Digraph: one cluster per time step, shared parameters outside, gradient colours.

Colour legend (when the drawing has gradients, see viz.colours): every tensor with a gradient — copies,
parameters, states, other values — is filled by ‖∂L/∂·‖ through matplotlib's viridis on a LogNorm
(dark purple: smallest, vanishing; yellow: largest), the colour bar saying "‖∂L/∂·‖ (log)"; edges take
the colour and width of the gradient of their tail, the value whose gradient flows back along them.
Grey: a zero gradient. White with a dashed border: not recorded (viz could not recover it). Without
gradients: shared parameters blue, copies light blue, states green, inputs white, losses pink.
"""
from . import row_sums
from .colours import LogScale, colour_bar, fmt, text_colour
from .layout import Layout

FONT = "Helvetica"

_FILL = {"param": "#9fc5e8", "copy": "#d9e8f6", "input": "#ffffff", "state": "#d9ead3", "value": "#ffffff",
         "loss": "#f4cccc", "op": "#eeeeee", "fold": "#ffffff"}
_SHAPE = {"param": "box", "copy": "box", "input": "ellipse", "state": "ellipse", "value": "ellipse",
          "loss": "box", "op": "box", "fold": "box"}
_STYLE = {"param": "rounded,filled,bold", "copy": "rounded,filled", "input": "filled", "state": "filled,bold",
          "value": "filled", "loss": "filled", "op": "rounded,filled", "fold": "dashed,rounded"}
_EDGE_STYLE = {"data": {}, "weight": {"color": "#6d9eeb"}, "state": {"penwidth": "2.2"},
               "sum": {"style": "dashed", "color": "#3c78d8", "constraint": "false"}}
SIGMA_COLOUR = row_sums.SIGMA_COLOUR


def to_digraph(view, rankdir=None, wrap=None):
    """graphviz.Digraph of a View (see viz.view). Nothing is rendered: that needs Graphviz's `dot` program.

    rankdir: "BT" (default: as on the slides, inputs at the bottom and time running left to right, the
    recurrence chain s(0) → a(1) → s(1) → a(2) → … on one row), "TB" (inputs on top), "LR"/"RL" (data
    flowing sideways, time running down the page). wrap: step boxes per row (see viz.layout); None
    wraps more than 6 boxes into rows of at most 4 for BT/TB and never for LR/RL.
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
           ranksep="0.3")
    g.attr("node", fontname=FONT, fontsize="12", margin="0.04,0.02", height="0.3", width="0")  # as small as the label
    g.attr("edge", fontname=FONT, fontsize="11", arrowsize="0.7", color="#555555")
    layout = Layout(view) if view.steps else None
    if layout and wrap is None and rankdir in ("LR", "RL"):  # time already runs down the page: no rows
        wrap = 0
    rows = layout.rows(wrap) if layout else None
    # one row packs its nodes closer (nodesep 0.12: an LSTM at T = 4 was 16.6 in wide, labels 8 pt on a
    # 16:9 slide; now 14.6 in, 9.1 pt, with the boxes' margin 4); wrapped rows keep room for the invisible
    # edges of their junctions (at 0.05 dot fails to
    # route them between the anchor points)
    g.attr(nodesep="0.05" if rows is not None and len(rows) == 1 else "0.12")
    sums = row_sums.plan(view, layout, rows) if layout else None  # wrapped: Σ per row (viz.row_sums)
    folds = {f[0] for f in view.folded}  # a fold's Σ over hundreds of copies would flatten the scale
    scale = LogScale([n.grad_norm for n in view.nodes.values()]
                     + [e.grad_norm for e in view.edges if e.tail not in folds]
                     + (sums.norms() if sums else [])) if view.show_grads else None

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
                   labelloc="b" if rankdir == "BT" else "t", margin="4")
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
        if sums and (e.tail, e.head) in sums.replaced:
            continue
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
        g.node("legend", colour_bar(scale), shape="plaintext", fontsize="10", **{"class": "legend"})
    if layout:
        anchors = layout.apply(g, "legend" if scale is not None else None, rows, rankdir,
                               sums.results if sums else ())
        if sums:
            row_sums.write(g, sums, anchors, layout.last_tops(rows), rankdir, scale,
                           lambda j: _junction_attrs(j, scale))
    return g


def _junction_attrs(junction, scale):
    """A row's partial sum (viz.row_sums): a small dashed box, filled by the running sum's gradient."""
    lines = [junction.label]
    attrs = {"shape": "box", "style": "rounded,dashed,filled", "fillcolor": "#ffffff", "fontsize": "10",
             "color": SIGMA_COLOUR, "fontcolor": SIGMA_COLOUR, "class": "rowsum"}
    if scale is not None and junction.grad_norm is not None:
        attrs["fillcolor"] = fill = scale.colour(junction.grad_norm)
        attrs["fontcolor"] = text_colour(fill)
        lines.append(fmt(junction.grad_norm))
    attrs["label"] = _dot_text(*lines)
    return attrs


def _dot_text(*lines):
    """Lines of text shown as they are: backslashes literal (DOT reads \\n, \\l, \\N… in labels), joined by
    DOT's own "\\n" line break (not a newline character: one statement per line of source), quotes
    escaped by the graphviz package's quoting, and never taken for HTML even when it looks like '<…>'."""
    import graphviz
    return graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))


def _node_label(n, scale):
    lines = [n.label]
    if n.kind == "copy" and scale is not None and n.grad_norm is not None:
        lines.append(fmt(n.grad_norm))  # ‖∂L/∂W(t)‖: the colour bar's title says which norm
    if n.note:
        lines += n.note.split("\n")  # the view's notes hold plain newlines
    return _dot_text(*lines)


def _node_attrs(n, scale):
    attrs = {"shape": _SHAPE[n.kind], "style": _STYLE[n.kind], "fillcolor": _FILL[n.kind], "class": n.kind}
    if scale is not None and n.kind not in ("input", "fold"):  # constants have no gradient to show
        attrs["fillcolor"] = fill = scale.colour(n.grad_norm)
        attrs["fontcolor"] = text_colour(fill)
        if n.grad_norm is None:  # not recorded: dashed, unlike a true zero
            attrs["style"] = attrs["style"] + ",dashed"
        else:
            attrs["tooltip"] = _dot_text(f"‖∂L/∂{n.label}‖ = {fmt(n.grad_norm)}")
    if n.kind == "copy":
        attrs["fontsize"] = "10"
    if n.kind == "fold":
        attrs["fontsize"] = "13"
    return attrs


def _edge_attrs(e, scale, view_kind):
    attrs = dict(_EDGE_STYLE[e.kind])
    attrs["class"] = e.kind
    if e.label and e.kind == "sum":
        # dot places the `label` of a constraint=false edge where the edge would have run, often far from
        # where it does run: the Σ is drawn as a tail label, on the drawn edge where it leaves the copy.
        # A 1 pt transparent label stays: the label node dot makes for it is part of what keeps the boxes
        # in time order (without it a fold moves past the last step) and each step's chain left to right
        # (a(t) before s(t) with sigma=("W",)): tests/test_viz_layout.py sweeps both. (Without those label
        # nodes an LSTM at T = 4 would be 13.5 in wide instead of 14.6.)
        attrs.update(label=_dot_text(f" {e.label} "), fontcolor="#ffffff00", fontsize="1")
        attrs.update(taillabel=_dot_text(e.label), labeldistance="1.3", labelangle="-30", labelfontsize="11",
                     labelfontcolor=SIGMA_COLOUR)
    elif e.label:
        attrs["label"] = _dot_text(f" {e.label} ")
    if view_kind == "rolled" and e.kind == "weight":
        attrs["color"] = "#555555"
    if scale is not None:
        x = scale.position(e.grad_norm)
        if x is not None:
            attrs.update(color=scale.colour(e.grad_norm), penwidth=f"{1 + 2.5 * x:.2f}")
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
