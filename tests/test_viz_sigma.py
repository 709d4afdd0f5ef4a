"""viz: where Graphviz puts the copies and their Σ — read from the laid-out positions (-Tjson), not the source.

Every copy P(t) (V(t) and c(t) included) stands inside its own step's box, and the Σ of each Σ edge is
drawn on that edge, where it leaves the copy (not floating where a constraint=false edge's label lands).
"""
import json
import shutil

import numpy as np
import pytest

graphviz = pytest.importorskip("graphviz")
pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

import viz  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402


def layout(graph):
    return json.loads(graphviz.pipe("dot", "json", graph.source.encode()).decode())


def spline(edge):
    """Points along the drawn edge: its cubic Bézier pieces sampled 20 times each."""
    points = [np.array(d["points"]) for d in edge["_draw_"] if d["op"] in ("b", "B")][0]
    s = np.linspace(0, 1, 20)[:, None]
    out = []
    for k in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[k:k + 4]
        out.append((1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s ** 2 * p2 + s ** 3 * p3)
    return np.vstack(out)


def point(text):
    return np.array([float(v) for v in text.split(",")[:2]])


def boxes_and_copies(lay):
    """({step: (x0, y0, x1, y1)}, {gvid: node}) of a -Tjson layout."""
    boxes = {}
    for obj in lay["objects"]:
        if obj.get("name", "").startswith("cluster_") and obj["name"] != "cluster_fold":
            boxes[int(obj["name"].split("_")[1])] = tuple(map(float, obj["bb"].split(",")))
    return boxes, {o["_gvid"]: o for o in lay["objects"] if "bb" not in o}


def lecture(cell, T):
    model = nn.RNN(4, 3, 4, cell=cell, seed=0)
    L, _ = model.loss(np.eye(4)[[k % 4 for k in range(T)]], [(k + 1) % 4 for k in range(T)])
    L.backward()
    return L, model


CASES = [("hello", 4, "BT"), ("hello", 4, "LR"), ("hello", 8, "BT"), ("hello", 30, "TB"),
         ("gru", 4, "BT"), ("lstm", 4, "BT"), ("lstm", 6, "RL")]


@pytest.mark.parametrize("name,T,rankdir", CASES)
def test_copies_inside_their_step_box_and_sigma_on_its_edge_beside_the_copy(name, T, rankdir):
    L = viz.example("hello", steps=T)[0] if name == "hello" else lecture(name, T)[0]
    lay = layout(viz.draw(L, rankdir=rankdir))
    boxes, nodes = boxes_and_copies(lay)
    sums = [e for e in lay["edges"] if e.get("class") == "sum"]
    assert sums
    for e in sums:
        tail, head = (e["head"], e["tail"]) if e.get("dir") == "back" else (e["tail"], e["head"])
        copy = nodes[tail]
        label = copy["label"].split("\\n")[0]
        if copy.get("class") in ("fold", "rowsum"):
            continue
        step = int(label.rsplit("(", 1)[1].rstrip(")"))
        x, y = point(copy["pos"])
        x0, y0, x1, y1 = boxes[step]
        assert x0 <= x <= x1 and y0 <= y <= y1, (label, (x, y), boxes[step])  # V(t), c(t): in box t
        if nodes[head].get("class") == "rowsum":  # wrapped: the row's partial sum says Σ (test_viz_rows.py)
            continue
        assert e["taillabel"].startswith("Σ") and "tail_lp" in e, label
        sigma = point(e["tail_lp"])
        on_edge = np.min(np.linalg.norm(spline(e) - sigma, axis=1))
        from_copy = np.linalg.norm(sigma - point(copy["pos"]))
        half_size = 72 * max(float(copy["width"]), float(copy["height"])) / 2
        assert on_edge < 16, (label, on_edge)  # on its edge: within the height of an 11 pt label and a half
        assert from_copy < half_size + 30, (label, from_copy)  # where the edge leaves the copy


def arrows(lay):
    """(tail, head) of every visible edge as the arrow points on the page (dot.py writes a state edge
    head -> tail with dir=back)."""
    return [(e["head"], e["tail"]) if e.get("dir") == "back" else (e["tail"], e["head"])
            for e in lay["edges"] if e.get("style") != "invis"]


def centre(node):
    return point(node["pos"])


@pytest.mark.parametrize("T,rankdir", [(2, "BT"), (4, "BT"), (4, "TB"), (5, "LR")])
def test_lstm_gates_grouped_on_the_chain_before_c_and_s(T, rankdir):
    # each step's gate pre-activations are one node gates(t) on the recurrence row, before C(t) and s(t);
    # everything from the step's inputs reaches C(t) and s(t) through it: C(t) takes gates(t) and C(t−1)
    # only, s(t) takes gates(t) and C(t) only
    L, model = lecture("lstm", T)
    lay = layout(viz.draw(L, model=model, rankdir=rankdir))
    boxes, nodes = boxes_and_copies(lay)
    by_label = {n["label"].split("\\n")[0]: n for n in nodes.values() if n.get("label")}
    along = 0 if rankdir in ("BT", "TB") else 1  # time (and the chain) run along x for BT/TB, down for LR
    for t in range(1, T + 1):
        gates, C, s = (by_label[f"{name}({t})"] for name in ("gates", "C", "s"))
        for n in (gates, C, s):
            x, y = centre(n)
            x0, y0, x1, y1 = boxes[t]
            assert x0 <= x <= x1 and y0 <= y <= y1, (n["label"], t)
        across = [centre(n)[1 - along] for n in (gates, C, s)]
        assert max(across) - min(across) < 1, (t, across)  # one row
        if rankdir in ("BT", "TB"):  # gates(t), then C(t), then s(t), left to right as the chain runs
            position = [centre(n)[0] for n in (gates, C, s)]
            assert position == sorted(position), (t, position)
        into = {name: sorted(nodes[tail]["label"].split("\\n")[0] for tail, head in arrows(lay) if head == n["_gvid"])
                for name, n in (("C", C), ("s", s))}
        assert into == {"C": sorted([f"gates({t})", f"C({t - 1})"]), "s": sorted([f"gates({t})", f"C({t})"])}, into


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_step_copies_stand_in_two_rows_biases_below_weights(cell):
    # BT: the chain on top of the copies; each step's bias copies lie lower than its weight copies, which
    # keeps a 4-copy step narrow (LSTM T = 4: 21.2 in wide with one row of copies)
    L, model = lecture(cell, 4)
    lay = layout(viz.draw(L, model=model))
    _, nodes = boxes_and_copies(lay)
    by_label = {n["label"].split("\\n")[0]: n for n in nodes.values() if n.get("label")}
    for t in range(1, 5):
        weights = [centre(by_label[f"weight_{k}({t})"])[1] for k in ("ih", "hh")]
        biases = [centre(by_label[f"bias_{k}({t})"])[1] for k in ("ih", "hh")]
        assert max(biases) < min(weights), (t, weights, biases)
    x0, _, x1, _ = map(float, lay["bb"].split(","))
    assert (x1 - x0) / 72 < 18.5


@pytest.mark.parametrize("T,rankdir", [(1, "BT"), (4, "BT"), (4, "TB"), (3, "LR")])
def test_gru_steps_name_their_two_gate_blocks_by_what_they_read(T, rankdir):
    # a GRU step keeps x W_ih + b_ih apart from h W_hh + b_hh (n = tanh(gi_n + r ⊙ gh_n)): two chunked
    # tensors, drawn x-gates(t) (from the input) and h-gates(t) (from the carried state), never two "gates(t)"
    L, model = lecture("gru", T)
    lay = layout(viz.draw(L, model=model, rankdir=rankdir))
    boxes, nodes = boxes_and_copies(lay)
    labels = [n["label"].split("\\n")[0] for n in nodes.values() if n.get("class")]  # drawn nodes
    assert len(labels) == len(set(labels)), sorted(x for x in labels if labels.count(x) > 1)
    by_label = {n["label"].split("\\n")[0]: n for n in nodes.values() if n.get("label")}
    into = {}
    for tail, head in arrows(lay):
        into.setdefault(nodes[head]["label"].split("\\n")[0], set()).add(nodes[tail]["label"].split("\\n")[0])
    for t in range(1, T + 1):
        assert f"gates({t})" not in by_label
        assert into[f"x-gates({t})"] == {f"x({t})", f"weight_ih({t})", f"bias_ih({t})"}, into[f"x-gates({t})"]
        assert into[f"h-gates({t})"] == {f"s({t - 1})", f"weight_hh({t})", f"bias_hh({t})"}, into[f"h-gates({t})"]
        for name in ("x-gates", "h-gates"):
            x, y = centre(by_label[f"{name}({t})"])
            x0, y0, x1, y1 = boxes[t]
            assert x0 <= x <= x1 and y0 <= y <= y1, (name, t)
