"""Where things stand in a stepped drawing (unrolled and ops views): rows and time order for dot.

dot fixes only one axis, the rank (the direction of `rankdir`); the order of nodes across a rank is what
its crossing minimisation (mincross) settles on. Step boxes are clusters, and dot drops every edge that
runs flat between two clusters (s(t−1) → a(t) on one row orders nothing), so nothing kept the boxes in
time order: mincross moved them to save crossings of the Σ and weight edges (t = 3, 1, 2 in hello T = 3;
2, 3, 4, 1 for a GRU at T = 4).

The fix: a row of invisible anchor points outside every cluster, one per step (and one for the folded
steps) in time order, chained by flat edges: between top-level nodes dot does keep flat edges tail before
head, so the anchors are in time order whatever mincross does. Each anchor has invisible edges into its
step's lowest nodes, so any other order of the boxes would cross those edges, and mincross keeps the
boxes over their anchors. Across the ranks, time runs left to right for rankdir BT/TB and top to bottom
for LR/RL.
"""


class Layout:
    """Rows and time order of a stepped drawing. The recurrence chain (s(0), a(t), s(t): the values on
    the way from one state to the next) is one row; copies used below or on the chain sit under it with
    their shared parameters in a row beneath; copies used above it (V(t), c(t) into y(t)) sit above their
    use with their parameters in the top row beside the output. `loose` edges do not set rows."""

    def __init__(self, view):
        edges = view.edges
        self.view = view
        self.chain = _chain(view)
        within = {}
        for e in edges:
            if e.kind in ("data", "state", "weight"):
                within.setdefault(e.tail, []).append(e.head)
        above = set()  # everything downstream of the chain
        stack = [i for i in self.chain]
        while stack:
            for h in within.get(stack.pop(), ()):
                if h not in above and h not in self.chain:
                    above.add(h)
                    stack.append(h)
        uses = {}
        for e in edges:
            if e.kind == "weight":
                uses.setdefault(e.tail, []).append(e.head)
        self.top_copies, self.bottom_copies = [], []
        for p, copies in view.copies.items():
            for c in copies:
                used_above = c in uses and all(h in above for h in uses[c])
                (self.top_copies if used_above else self.bottom_copies).append(c)
        top = set(self.top_copies)
        self.top_params = [p for p, cs in view.copies.items() if cs and all(c in top for c in cs)]
        self.bottom_params = [p for p in view.copies if p not in self.top_params]
        # shared parameters whose copies are all folded away keep their Σ edge from the fold node
        for e in edges:
            if e.kind == "sum" and e.head not in view.copies:
                self.bottom_params.append(e.head)
        self.loose = set()
        bottom_params = set(self.bottom_params)
        for e in edges:
            if e.kind == "state" or (e.kind == "sum" and e.head in bottom_params) \
                    or (e.kind == "weight" and e.tail in top):
                self.loose.add((e.tail, e.head))
        self.top_uses = [(e.head, e.tail) for e in edges if e.kind == "weight" and e.tail in top]
        self.after = _after_steps(view)

    def rows(self, wrap=None):
        """The step boxes cut into rows of the drawing: [[(key, ids)]] (see _rows_of). wrap: boxes per row
        (None: automatic, at most WRAP per row, rows as even as can be; 0: one row however long)."""
        return _rows_of(self._boxes(), wrap)

    def apply(self, g, legend, rows, rankdir="BT", results=()):
        """Write the rows into `g`; returns each row's anchor ids. results: the parameters and results
        that viz.row_sums chains after the last row (a wrapped drawing): they stand in one rank there,
        with every other shared parameter and the legend."""
        row_of = {i: r for r, row in enumerate(rows) for _, ids in row for i in ids}
        for r in range(len(rows)):  # the recurrence chain and the copies above it: one row per row of boxes
            _row(g, [i for i in self.chain if row_of.get(i, 0) == r])
            _row(g, [i for i in self.top_copies if row_of.get(i, 0) == r])
        if results:
            _row(g, self.bottom_params + self.top_params + [i for i in self.after if i in results] + [legend])
            _row(g, [i for i in self.after if i not in results])
        else:
            _row(g, self.bottom_params)
            # what sums the steps up (L = L(1) + L(2) + …) is one row on top: written outside the boxes on
            # rows of their own, the partial sums climb a staircase that drags the first boxes out of order.
            # The legend rides there too: beside the parameters it stood past the last box (LSTM T = 4:
            # 1.6 in wider), tied under them it turned GRU chains round (s(t) left of its gates)
            _row(g, self.top_params + self.after + [legend])
            for p in dict.fromkeys(self.bottom_params):  # parameters under their copies
                for c in self.view.copies.get(p, []):
                    g.edge(p, c, style="invis")
        for vector, matrix in self._vectors_under_matrices():
            g.edge(vector, matrix, style="invis")
        for head, copy in self.top_uses:  # copies used above the chain sit above their use
            g.edge(head, copy, style="invis")
        # one row: its anchors on the first rank of all (under the parameters), where they cost no width
        # several rows: the edges between rows tempt mincross to move boxes, so the anchors weigh more
        anchors = [self._anchor_time(g, row, "min", 1) if len(rows) == 1 else
                   self._anchor_time(g, row, "same", ANCHOR_WEIGHT) for row in rows]
        # each row of boxes after the one before it (below it for BT/TB, right of it for LR/RL), box k
        # beside box k so the rows line up: a constraint edge from the last ranks of one row to the anchors
        # (first ranks) of the other, whichever way the ranks run
        for r in range(1, len(rows)):
            earlier = [a for a in anchors[r - 1] if a != "time0"]
            for k, box in enumerate(rows[r]):
                anchor = earlier[min(k, len(earlier) - 1)]
                if reverse_ranks(rankdir):  # ranks grow upwards / leftwards: the later row ranks lower
                    for i in self._tops([box]):
                        g.edge(i, anchor, style="invis")
                else:
                    steps_before = [b for b in rows[r - 1] if b[0] != "0"]
                    for i in self._tops(steps_before[k:k + 1] or steps_before[-1:]):
                        g.edge(i, anchors[r][k], style="invis")
        return anchors

    def last_tops(self, rows):
        """Each row's last box's nodes on the output side (L(t), V(t), …): what viz.row_sums puts its
        output-side junctions past."""
        return [self._tops(row[-1:]) for row in rows]

    def _vectors_under_matrices(self):
        """[(vector copy, matrix copy)] of the steps with several copies below the chain: the biases b(t)
        one rank further from the chain than the weights U(t), W(t), so a step's copies stand in two short
        rows rather than one long one."""
        nodes, pairs = self.view.nodes, []
        bottom = set(self.bottom_copies)
        for ids in self.view.steps.values():
            copies = [i for i in ids if i in bottom]
            matrices = [i for i in copies if len(nodes[i].shape) >= 2]
            if len(copies) > 3:
                pairs += [(v, m) for v in copies if len(nodes[v].shape) == 1 for m in matrices]
        return pairs

    def _boxes(self):
        """[(key, ids)]: the step boxes in time order, the fold in its place, s(0) first."""
        view = self.view
        boxes = [(t, ids) for t, ids in view.steps.items()]
        for fold_id, first, _, _ in view.folded:
            boxes.append((first, [fold_id]))
        boxes.sort(key=lambda box: box[0])
        before = [i for i in self.chain if view.nodes[i].step is None and i in view.outside]
        if before:  # s(0) before the first step
            boxes.insert(0, ("0", before))
        return boxes

    def _tops(self, row):
        """The nodes of a row of boxes that no constraint edge inside the row leaves upwards from: L(t),
        V(t), c(t), … (y(t) → V(t) is such an edge: the copies used above the chain sit above it)."""
        ids = {i for _, box in row for i in box}
        below = {e.tail for e in self.view.edges if e.tail in ids and e.head in ids
                 and e.kind != "sum" and (e.tail, e.head) not in self.loose}
        below |= {head for head, _ in self.top_uses if head in ids}
        return [i for _, box in row for i in box if i not in below]

    def _anchor_time(self, g, row, rank="same", weight=1):
        """The anchor row of one row of boxes (see the module docstring): one invisible point per box in
        time order, chained by flat edges and tied to the box's lowest nodes. Returns the anchors."""
        view = self.view
        bottom = set(self.bottom_copies)
        anchors = []
        for t, ids in row:
            anchor = f"time{t}"
            anchors.append(anchor)
            g.node(anchor, "", shape="point", width="0", height="0", style="invis")
            lowest = [i for i in ids if view.nodes[i].kind in ("input", "fold") or i in bottom] or ids
            for i in lowest:  # parallel edges merge into one whose crossings count ANCHOR_WEIGHT times
                g.body.append("\t" + " ".join([f"{anchor} -> {_quote(i)} [style=invis]"] * weight) + "\n")
        g.body.append(f"\t{{rank={rank}; " + "; ".join(anchors) + "}\n")
        for before, after in zip(anchors, anchors[1:]):
            g.edge(before, after, style="invis")
        return anchors


ANCHOR_WEIGHT = 8  # in wrapped rows a box away from its anchor costs 8 crossings per edge, not 1
WRAP_FROM = 6  # up to 6 boxes stay on one row (T = 6 is 3.6:1), more wrap
WRAP = 4  # boxes per row at most, by default: T = 50 (12 steps and the fold) is 4 rows of 4, 3, 3, 3


def reverse_ranks(rankdir):
    """Do later rows of boxes take lower ranks (ranks grow upwards for BT, leftwards for RL)?"""
    return rankdir in ("BT", "RL")


def _rows_of(boxes, wrap):
    """The boxes cut into rows of `wrap` boxes (s(0) rides with the first), or automatically (more than
    WRAP_FROM boxes) into as few rows of at most WRAP as can be, as even as can be; wrap=0: one row."""
    if wrap is not None and (not isinstance(wrap, int) or wrap < 0):
        raise ValueError(f"viz: wrap must be a number of step boxes per row (0: no wrapping) or None, "
                         f"got {wrap!r}")
    steps = [b for b in boxes if b[0] != "0"]
    if wrap is None and len(steps) <= WRAP_FROM:
        wrap = 0
    if wrap is None:  # the first rows one box longer than the rest: 13 boxes are 4, 3, 3, 3
        n_rows = -(-len(steps) // WRAP)
        sizes = [len(steps) // n_rows + (k < len(steps) % n_rows) for k in range(n_rows)]
    else:
        wrap = wrap or len(steps) or 1
        sizes = [wrap] * -(-len(steps) // wrap)
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    rows = [steps[a:a + n] for a, n in zip(starts, sizes)] or [[]]
    rows[0] = [b for b in boxes if b[0] == "0"] + rows[0]
    return rows


def _after_steps(view):
    """Nodes outside the steps that only take results of the steps (the partial sums of L and L itself),
    in drawing order."""
    nodes, outside = view.nodes, set(view.outside)
    feeds_steps = {e.tail for e in view.edges if e.tail in outside and nodes[e.head].step is not None}
    heads = {}
    for e in view.edges:
        if e.kind == "data" or e.kind == "state":
            heads.setdefault(e.tail, []).append(e.head)
    starts = [i for i, n in nodes.items() if n.step is not None or n.kind == "fold"]
    reached = _reach(starts, heads)
    return [i for i in view.outside if i in reached and i not in feeds_steps]


def _row(g, ids):
    ids = [i for i in dict.fromkeys(ids) if i]
    if ids:
        g.body.append("\t{rank=same; " + "; ".join(_quote(i) for i in ids) + "}\n")


def _chain(view):
    """Ids on the recurrence row: the ends of state edges and, inside each step, every value on a path from
    a state edge's head to a state (a(t) between s(t−1) → a(t) and s(t))."""
    nodes, edges = view.nodes, view.edges
    heads, chain = [], []
    for e in edges:
        if e.kind == "state":
            chain += [e.tail, e.head]
            heads.append(e.head)
    forward, backward = {}, {}
    for e in edges:
        if e.kind == "data" and nodes[e.tail].step is not None and nodes[e.tail].step == nodes[e.head].step:
            forward.setdefault(e.tail, []).append(e.head)
            backward.setdefault(e.head, []).append(e.tail)
    reach = _reach(heads, forward)
    states = [n.id for n in nodes.values() if n.kind == "state"]
    chain += [i for i in _reach(states, backward) if i in reach] + states
    chain = [i for i in chain if nodes[i].kind != "fold"]  # on the row dot moves it past the last step
    return sorted(dict.fromkeys(chain), key=_time_order(view))


def _time_order(view):
    """Sort key: nodes outside the steps first, then by step (a fold at its first step), then walk order."""
    order = {i: k for k, i in enumerate(view.nodes)}
    fold_step = {f[0]: f[1] for f in view.folded}

    def key(i):
        step = view.nodes[i].step if i not in fold_step else fold_step[i]
        return (-1 if step is None else step, order[i])
    return key


def _reach(starts, adjacency):
    seen, stack = set(starts), list(starts)
    while stack:
        for n in adjacency.get(stack.pop(), ()):
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def _quote(i):
    return i if i.isidentifier() else f'"{i}"'
