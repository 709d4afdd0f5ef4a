"""viz: where Graphviz actually puts the step boxes — time order read from the laid-out positions (-Tjson0).

Across the ranks time runs left to right for rankdir BT/TB and top to bottom for LR/RL. Many graphs are
laid out by one `dot` call (graphviz.pipe over the concatenated sources), so the sweep stays fast.
"""
import json
import shutil

import numpy as np
import pytest

graphviz = pytest.importorskip("graphviz")
pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

import viz  # noqa: E402
from tinygrad_rnn import Parameter, Tensor, Unroll, nn  # noqa: E402
import tinygrad_rnn.functional as F  # noqa: E402

RANKDIRS = ("BT", "TB", "LR", "RL")


def layouts(sources):
    """The -Tjson0 layouts of many DOT sources, from one dot process."""
    text = graphviz.pipe("dot", "json0", "\n".join(sources).encode()).decode()
    decoder, found, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        layout, at = decoder.raw_decode(text, at)
        found.append(layout)


def box_order(layout, rankdir):
    """The step boxes' first steps in reading order: rows of boxes (wrapped long drawings) from top to
    bottom, and left to right in a row, for BT/TB; for LR/RL the rows are columns, left to right, and
    the boxes run top to bottom in a column. Boxes overlapping across the rows' axis share a row."""
    boxes = []
    for obj in layout.get("objects", []):
        if obj.get("name", "").startswith("cluster_") and "bb" in obj:
            x0, y0, x1, y1 = map(float, obj["bb"].split(","))
            step = int(obj["label"].split("=")[1].split("…")[0])
            if rankdir in ("BT", "TB"):  # (start and end across the rows, position along a row)
                boxes.append((-y1, -y0, (x0 + x1) / 2, step))
            else:
                boxes.append((x0, x1, -(y0 + y1) / 2, step))
    boxes.sort()
    rows = []
    for lo, hi, along, step in boxes:
        if rows and lo < rows[-1][0]:  # overlaps the current row
            rows[-1][1].append((along, step))
        else:
            rows.append((hi, [(along, step)]))
    return [step for _, row in rows for _, step in sorted(row)]


def lecture_rnn(T, cell):
    model = nn.RNN(4, 3, 4, cell=cell, seed=0)
    L, _ = model.loss(np.eye(4)[[k % 4 for k in range(T)]], [(k + 1) % 4 for k in range(T)])
    L.backward()
    return L


def readme_unroll(T, named):
    """The README's 16-line example, over T steps, with or without names on the intermediate tensors."""
    rng = np.random.default_rng(0)
    U, W, b = (Parameter(rng.normal(0, 0.5, s), name=n) for n, s in [("U", (4, 4)), ("W", (4, 4)), ("b", (4,))])
    tape, s, losses = Unroll(shared=[U, W, b]), Tensor(np.zeros(4), name="s(0)" if named else None), []
    with tape:
        for t in range(1, T + 1):
            with tape.step(t):
                s = (Tensor(np.eye(4)[t % 4]) @ U + s @ W + b).tanh()
                losses.append(F.cross_entropy(s, (t + 1) % 4))
                if named:
                    s.name, losses[-1].name = f"s({t})", f"L({t})"
    L = sum(losses)
    L.backward()
    return L


def seq2seq_encoder(T):
    model = nn.Seq2Seq(5, 4, 3, bos=4, cell="gru", seed=0)
    L, _, _ = model.loss(np.arange(T) % 4, np.array([1, 2]))
    L.backward()
    return L


def check(cases):
    """cases: [(description, L, view, rankdir[, wrap])] -> the descriptions whose boxes are out of time order."""
    sources = [viz.draw(c[1], view=c[2], rankdir=c[3], wrap=c[4] if len(c) > 4 else None).source for c in cases]
    wrong = []
    for (what, _, _, rankdir, *_), layout in zip(cases, layouts(sources)):
        order = box_order(layout, rankdir)
        if order != sorted(order) or not order:
            wrong.append(f"{what}: {order}")
    return wrong


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_boxes_of_every_cell_stand_in_time_order(cell):
    # every T from 1 to 15 (wrapped from 5 on, folded from 13 on), each T in another direction, so every
    # (view, direction) pair meets T's of every residue; the ops view of the gated cells (dot's slowest
    # layouts) at fewer T, the lecture cell's at every T
    cases = []
    for T in range(1, 16):
        L = lecture_rnn(T, cell)
        for v, view in enumerate(("unrolled", "ops")):
            if view == "ops" and cell != "rnn" and T not in (1, 2, 3, 4, 5, 8, 12, 13):
                continue
            rankdir = RANKDIRS[(T + v) % 4]
            cases.append((f"{cell} T={T} {view} {rankdir}", L, view, rankdir))
    assert check(cases) == []


def test_readme_example_named_and_unnamed_and_seq2seq_stand_in_time_order():
    cases = []
    for T in range(1, 16):
        for named in (False, True):
            L = readme_unroll(T, named)
            for v, view in enumerate(("unrolled", "ops")):
                rankdir = RANKDIRS[(T + v + 2 * named) % 4]
                cases.append((f"README named={named} T={T} {view} {rankdir}", L, view, rankdir))
    for T in (2, 3, 4, 5):
        L = seq2seq_encoder(T)
        cases += [(f"Seq2Seq S={T} {r}", L, "unrolled", r) for r in RANKDIRS]
    assert check(cases) == []


def test_the_issue_cases_in_every_direction():
    # the drawings reported out of order: hello T = 2, 3; GRU/LSTM T = 3, 4
    cases = []
    for T in (2, 3):
        L, _ = viz.example("hello", steps=T)
        cases += [(f"hello T={T} {r}", L, "unrolled", r) for r in RANKDIRS]
    for cell in ("gru", "lstm"):
        for T in (3, 4):
            cases += [(f"{cell} T={T} {r}", lecture_rnn(T, cell), "unrolled", r) for r in RANKDIRS]
    # one long row (wrap=0) and rows of 3 boxes, every T
    for T in range(1, 16):
        cases.append((f"rnn T={T} wrap=0 BT", lecture_rnn(T, "rnn"), "unrolled", "BT", 0))
    for T in (4, 7, 10, 13):
        cases.append((f"rnn T={T} wrap=3 TB", lecture_rnn(T, "rnn"), "unrolled", "TB", 3))
    assert check(cases) == []


def slide_fit(layout):
    """(width, height) in inches of a -Tjson0 layout and the smallest label font in points."""
    x0, y0, x1, y1 = map(float, layout["bb"].split(","))
    fonts = [float(o.get("fontsize", 14)) for o in layout["objects"]
             if o.get("style") != "invis" and o.get("label") and "nodes" not in o]
    return (x1 - x0) / 72, (y1 - y0) / 72, min(fonts)


def test_slide_sizes():
    # hello at T = 4 on a 16:9 slide (13.33 × 7.5 in): every label at least 9 pt once scaled to fit
    L4, _ = viz.example("hello")
    L50, _ = viz.example("hello", steps=50)
    L1000, _ = viz.example("deep", steps=1000)
    (w, h, font), long50, long1000 = [slide_fit(lay) for lay in layouts(
        [viz.draw(L).source for L in (L4, L50, L1000)])]
    assert font * min(13.33 / w, 7.5 / h) >= 9, (w, h, font)
    for w, h, _ in (long50, long1000):  # wrapped into rows of at most 4 boxes: no 13:1 strip
        assert w / h <= 3.0, (w, h)


def test_gated_cells_at_t4_fit_a_slide_with_9pt_labels_and_are_titled_by_their_model():
    # GRU / LSTM at T = 4 scaled onto a 16:9 slide: every label at least 9 pt (7.7 / 7.6 pt before the
    # one-row drawings packed their nodes closer and lost the Σ label nodes standing between the boxes)
    drawings = []
    for cell in ("gru", "lstm"):
        model = nn.RNN(4, 3, 4, cell=cell, seed=0)
        L, _ = model.loss(np.eye(4)[[0, 1, 2, 2]], [1, 2, 2, 3])
        L.backward()
        drawings.append((cell, viz.draw(L, model=model)))
    for (cell, g), lay in zip(drawings, layouts([g.source for _, g in drawings])):
        w, h, font = slide_fit(lay)
        assert font * min(13.33 / w, 7.5 / h) >= 9, (cell, w, h, font)
        assert lay["label"] == f"RNN(4, 3, 4, cell='{cell}'): unrolled graph, T = 4 steps", lay["label"]


def chain_drawn_backwards(layout, rankdir):
    """Edges inside one step box between two nodes of one rank (the recurrence chain: a(t) → s(t),
    gates(t) → C(t) → s(t)) whose head stands before their tail along the time axis."""
    nodes = {o["_gvid"]: o for o in layout["objects"] if not o.get("name", "").startswith(("cluster_", "%"))}
    box = {n: o["name"] for o in layout["objects"] if o.get("name", "").startswith("cluster_")
           for n in o.get("nodes", [])}
    backwards = []
    for e in layout.get("edges", []):
        tail, head = (e["head"], e["tail"]) if e.get("dir") == "back" else (e["tail"], e["head"])
        if e.get("style") == "invis" or box.get(tail) is None or box.get(tail) != box.get(head):
            continue
        (xt, yt), (xh, yh) = (map(float, nodes[i]["pos"].split(",")) for i in (tail, head))
        across, along = (yt - yh, xh - xt) if rankdir in ("BT", "TB") else (xt - xh, yt - yh)
        if abs(across) < 1 and along < 0:
            backwards.append(f'{nodes[tail]["label"]} -> {nodes[head]["label"]}')
    return backwards


def test_each_steps_chain_runs_with_time_inside_its_box():
    # a(t) left of s(t) (gates(t), C(t), s(t) for an LSTM): with sigma=("W",) a plain hello drawing had
    # s(t) left of a(t) when the hidden Σ label nodes were dropped, and a GRU's s(t) left of its gates
    # when the legend was tied under the parameters
    cases = []
    for T in range(1, 7):
        for cell in ("rnn", "lstm"):
            cases += [(f"{cell} T={T} {r}", lecture_rnn(T, cell), r, {}) for r in ("BT", "TB")]
        if T >= 2:
            L, _ = viz.example("hello", steps=T)
            cases += [(f"hello T={T} sigma=W {r}", L, r, {"sigma": ("W",)}) for r in ("BT", "TB")]
            cases.append((f"gru T={T} BT", lecture_rnn(T, "gru"), "BT", {}))
    for T in (7, 9, 12, 30):
        cases.append((f"rnn T={T} wrapped", lecture_rnn(T, "rnn"), "BT", {}))
    sources = [viz.draw(L, rankdir=r, **kw).source for _, L, r, kw in cases]
    wrong = {what: bad for (what, _, r, _), lay in zip(cases, layouts(sources))
             if (bad := chain_drawn_backwards(lay, r))}
    assert wrong == {}
