"""Partial sums per row of a wrapped drawing: every Σ edge stays inside its row of step boxes.

Drawn one Σ edge per copy into the shared parameter, a wrapped drawing (T ≥ 7) sends the edges of every
row across all the rows below to U, W, b, and the L(t) → L edges climb across all the rows above: at
T = 50 the page is a net of dashed lines. Instead, each row sums its own copies first:

    W(5) W(6) … W(8) → "Σ W(1…8)"  (at the row's right end)  → "Σ W(1…12)" (next row) → … → W

one junction per parameter per row, holding the running sum of ∂L/∂W(t) over every step up to the row's
last (from View.copy_grads: its colour and number), chained row to row down the right margin into the parameter, which
stands with the others and L after the last row. The copies of U, W, b (used on the input side of a
step) meet their junction on the rank of the row's anchors, under the boxes; V, c and the per-step
losses (used on the output side) meet theirs on the rank just past the boxes' output side. The L(t) are
grouped the same way, "Σ L(1…8)": a partial sum drawn to group the edges, not an op the engine recorded
(L = Σ_t L(t) is one op).

Drawings of one row (T ≤ 6 by default) keep one Σ edge per copy (viz.dot); this module is only used when
the boxes wrap.
"""
from dataclasses import dataclass, field

import numpy as np

from .layout import reverse_ranks

SIGMA_COLOUR = "#1c4587"
SUMS = ("sum", "add")  # ops whose partial sums are honest to write as Σ


@dataclass
class Junction:
    id: str
    label: str  # "Σ W(1…8)"
    target: str  # the parameter or result it sums into
    row: int
    side: str  # "input" (beside the anchors) or "output" (past the boxes' outputs)
    grad_norm: float = None


@dataclass
class RowSums:
    """The junctions of a wrapped drawing and the edges they stand for. replaced: the view's edges
    (tail, head) drawn through a junction instead; edges: [(tail, head, grad_norm)], a fold's among them
    (the junction's label, "Σ W(1…45)", counts its copies in);
    results: the parameters and results the chains end in (one rank after the last row)."""
    junctions: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    replaced: set = field(default_factory=set)
    results: list = field(default_factory=list)
    folds: set = field(default_factory=set)  # like viz.dot, the scale leaves a fold's sum over many copies out

    def norms(self):
        return [j.grad_norm for j in self.junctions] + [e[2] for e in self.edges if e[0] not in self.folds]


def plan(view, layout, rows):
    """RowSums of `view` laid out in `rows` (viz.layout's rows of boxes), or None for one row."""
    steps_rows = [row for row in rows if any(key != "0" for key, _ in row)]
    if len(steps_rows) < 2:
        return None
    nodes = view.nodes
    row_of, last_step = {}, []
    fold_last = {f[0]: f[2] for f in view.folded}
    for r, row in enumerate(rows):
        for _, ids in row:
            for i in ids:
                row_of[i] = r
        last_step.append(max([key for key, _ in row if key != "0"]
                             + [fold_last[i] for _, ids in row for i in ids if i in fold_last], default=None))
    first = min(key for row in rows for key, _ in row if key != "0")
    top = set(layout.top_params)
    after = set(layout.after)
    sums = RowSums(folds=set(fold_last))
    into = {}  # target -> {row: [(tail, grad_norm)]}
    for e in view.edges:
        if e.tail not in row_of:
            continue
        if e.kind == "sum" and e.head in view.copies:
            into.setdefault(e.head, {}).setdefault(row_of[e.tail], []).append((e.tail, e.grad_norm))
        elif e.kind in ("data", "state") and e.head in after and nodes[e.head].step is None:
            into.setdefault(e.head, {}).setdefault(row_of[e.tail], []).append((e.tail, e.grad_norm))
    for target, by_row in into.items():
        node = nodes[target]
        is_result = target in after
        if is_result and len(by_row) < 2:
            continue  # one row feeds it (a classifier's last step): nothing to group
        running = {} if is_result else _running_norms(view.copy_grads.get(target, []), [last_step[r] for r in by_row])
        side = "output" if target in top or is_result else "input"
        word = ("Σ " if node.op in SUMS else "") if is_result else "Σ "
        chain = []
        for r in sorted(by_row):
            last = last_step[r]
            norm = node.grad_norm if is_result else running[last]
            j = Junction(f"rowsum_{target}_{r}", f"{word}{node.label}({first}…{last})", target, r, side,
                         norm)
            sums.junctions.append(j)
            for tail, grad in by_row[r]:
                sums.replaced.add((tail, target))
                sums.edges.append((tail, j.id, grad))
            if chain:
                sums.edges.append((chain[-1].id, j.id, chain[-1].grad_norm))
            chain.append(j)
        sums.edges.append((chain[-1].id, target, chain[-1].grad_norm))
        sums.results.append(target)
    return sums


def write(g, sums, anchors, last_tops, rankdir, scale, style):
    """Write the junctions, their edges and ranks into `g`. anchors: each row's anchor ids; last_tops: each
    row's last box's output-side nodes (viz.layout); style(junction) -> node attributes; edges take the
    colour and width of the gradient that flows back along them."""
    back = reverse_ranks(rankdir)
    for j in sums.junctions:
        g.node(j.id, **style(j))
    kinds = {j.id: j for j in sums.junctions}
    for tail, head, grad in sums.edges:
        attrs = {"class": "sum", "style": "dashed", "color": "#3c78d8", "arrowsize": "0.6"}
        if scale is not None and scale.position(grad) is not None:
            attrs.update(color=scale.colour(grad), penwidth=f"{1 + 2.5 * scale.position(grad):.2f}")
        if tail not in kinds:  # a copy (or L(t)) into its row's junction: the rank=same groups below place
            # the junction; as a constraint the edge would pull boxes out of time order (a fold past the
            # step after it: tests/test_viz_layout.py)
            attrs["constraint"] = "false"
            g.edge(tail, head, **attrs)
        elif back:  # junction to the next row's or to the parameter: written head -> tail with dir=back,
            g.edge(head, tail, dir="back", **attrs)  # the same arrow, ranks growing the other way
        else:
            g.edge(tail, head, **attrs)
    for members, anchor, ends in _boundaries(sums, anchors, len(anchors), back):
        starts = [anchor] if anchor else []
        for r in ends:  # a point over row r's last box: its output-side junctions stand right of it
            end = f"rowend{r}"
            g.node(end, "", shape="point", width="0", height="0", style="invis")
            for i in last_tops[r]:
                g.edge(i, end, style="invis")
            starts.append(end)
        g.body.append("\t{rank=same; " + "; ".join(starts + members) + "}\n")
        for start in starts:  # at the right end of the rows: after their last anchor and boxes
            g.edge(start, members[0], style="invis")
        for before, after in zip(members, members[1:]):
            g.edge(before, after, style="invis")


def _boundaries(sums, anchors, n_rows, back):
    """[(junction ids, anchor, rows)] per gap between rows of boxes (and before the first and after the
    last): the junctions standing there, the earlier row's first, the last anchor whose rank it is, and the
    rows whose output side it is. Row r's input side (its anchors) is gap r + 1 when later rows rank lower
    (BT: below the row), else gap r (TB: above it); its output side is the other one."""
    gaps = {}
    for r in range(n_rows):
        inputs, outputs = (r + 1, r) if back else (r, r + 1)
        for side, gap in (("input", inputs), ("output", outputs)):
            ids = [j.id for j in sums.junctions if j.row == r and j.side == side]
            if ids:
                members, anchor, ends = gaps.setdefault(gap, ([], None, []))
                members.extend(ids)
                if side == "input":
                    gaps[gap] = (members, anchors[r][-1], ends)
                else:
                    ends.append(r)
    return [gaps[k] for k in sorted(gaps)]


def _running_norms(copy_grads, ends):
    """{t: ‖Σ_{s ≤ t} ∂L/∂P(s)‖ or None (no copy has a gradient yet)} at the steps `ends`, in one pass
    over the copies' gradients in step order (folded ones included)."""
    ends, found, total = sorted(set(ends)), {}, None
    k = 0
    for step, grad in copy_grads + [(float("inf"), None)]:
        while k < len(ends) and step > ends[k]:
            found[ends[k]] = None if total is None else float(np.linalg.norm(total))
            k += 1
        if grad is not None:
            grad = np.asarray(grad, dtype=np.float64)
            total = grad.copy() if total is None else total + grad
    return found
