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
    """The step boxes' labels in the order they stand along the time axis (s(0) and folds included as
    their clusters' first step)."""
    centres = {}
    for obj in layout.get("objects", []):
        if obj.get("name", "").startswith("cluster_") and "bb" in obj:
            x0, y0, x1, y1 = map(float, obj["bb"].split(","))
            step = int(obj["label"].split("=")[1].split("…")[0])
            centres[step] = (x0 + x1) / 2 if rankdir in ("BT", "TB") else -(y0 + y1) / 2
    return sorted(centres, key=centres.get)


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
    """cases: [(description, L, view, rankdir)] -> the descriptions whose boxes are out of time order."""
    sources = [viz.draw(L, view=view, rankdir=rankdir).source for _, L, view, rankdir in cases]
    wrong = []
    for (what, _, _, rankdir), layout in zip(cases, layouts(sources)):
        order = box_order(layout, rankdir)
        if order != sorted(order) or not order:
            wrong.append(f"{what}: {order}")
    return wrong


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_boxes_of_every_cell_stand_in_time_order(cell):
    # every T from 1 to 15 (folded from 13 on) in both stepped views; each T in another direction, so
    # every (view, direction) pair meets T's of every residue
    cases = []
    for T in range(1, 16):
        L = lecture_rnn(T, cell)
        for v, view in enumerate(("unrolled", "ops")):
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
    assert check(cases) == []
