"""viz: DOT source of the three views, folding, gradient colours, real renders, the missing-`dot` error."""
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("graphviz")

import viz  # noqa: E402
from tinygrad_rnn import Parameter, Tensor, Unroll  # noqa: E402
from tinygrad_rnn.cli import main  # noqa: E402
from viz.colours import CMAP, ZERO, LogScale, fmt  # noqa: E402

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program is not installed")

NODE = re.compile(r'^\s*(\w+) \[label=("(?:[^"\\]|\\.)*"|\S+)(.*)\]$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$")


class Dot:
    """The parts of a DOT source the tests look at: nodes (label, attrs, cluster) and edges in order."""

    def __init__(self, source):
        self.source = source
        self.nodes, self.edges, self.clusters = {}, [], {}
        cluster = None
        for line in source.splitlines():
            m = re.match(r"^\s*subgraph (cluster_\w+) \{", line)
            if m:
                cluster = m.group(1)
                self.clusters[cluster] = re.search(r'label="([^"]*)"', source[source.index(line):]).group(1)
                continue
            if line.strip() == "}":
                cluster = None
                continue
            m = EDGE.match(line)
            if m:
                tail, head, attrs = m.group(1), m.group(2), m.group(3) or ""
                if "dir=back" in attrs:  # written head -> tail, drawn (and meant) tail -> head
                    tail, head = head, tail
                if "style=invis" not in attrs:  # layout helpers are not part of the drawing
                    self.edges.append((tail, head, attrs))
                continue
            m = NODE.match(line)
            if m and "style=invis" not in m.group(3):  # the time anchors are layout helpers too
                label = m.group(2).strip('"').split("\\n")[0]
                self.nodes[m.group(1)] = {"label": label, "attrs": m.group(3), "cluster": cluster,
                                          "full": m.group(2)}

    def ids(self, label):
        return [i for i, n in self.nodes.items() if n["label"] == label]

    def id(self, label):
        (i,) = self.ids(label)
        return i

    def label(self, i):
        return self.nodes[i]["label"]

    def of_class(self, cls):
        return [i for i, n in self.nodes.items() if f"class={cls}" in n["attrs"]]

    def edges_of_class(self, cls):
        return [(t, h, a) for t, h, a in self.edges if f"class={cls}" in a]


@pytest.fixture(scope="module")
def hello():
    L, out = viz.example("hello", backward=False)
    return L, out


@pytest.fixture(scope="module")
def hello_grads():
    return viz.example("hello")


def test_unrolled_has_one_cluster_per_step_with_its_copies_inside(hello):
    L, out = hello
    d = Dot(viz.draw(L, view="unrolled").source)
    assert d.clusters == {f"cluster_{t}": f"t = {t}" for t in out.tape.steps}
    for p in out.tape.parameters:  # every copy W(t) of the recorded tape sits in the box of step t
        for copy in out.tape.copies(p):
            i = d.id(copy.name)
            assert d.nodes[i]["cluster"] == f"cluster_{copy.step}"
            assert "class=copy" in d.nodes[i]["attrs"]
        assert d.nodes[d.id(p.name)]["cluster"] is None  # the shared parameter is outside every step
    for t in out.tape.steps:
        for name in ("x", "a", "s", "y", "L"):
            assert d.nodes[d.id(f"{name}({t})")]["cluster"] == f"cluster_{t}"
    assert d.nodes[d.id("L")]["cluster"] is None and d.nodes[d.id("s(0)")]["cluster"] is None


def test_exactly_T_sigma_edges_into_each_shared_parameter(hello):
    L, out = hello
    d = Dot(viz.draw(L).source)
    T = out.T
    for p in out.tape.parameters:
        into = [(t, a) for t, h, a in d.edges if h == d.id(p.name)]
        assert len(into) == T and all('taillabel="Σ"' in a for _, a in into)
        assert sorted(d.label(t) for t, _ in into) == sorted(c.name for c in out.tape.copies(p))
    assert len(d.edges_of_class("sum")) == T * len(out.tape.parameters)


def test_state_edges_run_in_time_order(hello):
    L, out = hello
    d = Dot(viz.draw(L).source)
    states = [(d.label(t), d.label(h)) for t, h, _ in d.edges_of_class("state")]
    assert states == [(f"s({t - 1})", f"a({t})") for t in range(1, out.T + 1)]
    # and inside each step a(t) -> s(t) -> y(t) -> L(t) -> L, as in the lecture's equations
    pairs = {(d.label(t), d.label(h)) for t, h, _ in d.edges}
    for t in range(1, out.T + 1):
        assert {(f"a({t})", f"s({t})"), (f"s({t})", f"y({t})"), (f"y({t})", f"L({t})"), (f"L({t})", "L"),
                (f"x({t})", f"a({t})"), (f"W({t})", f"a({t})"), (f"V({t})", f"y({t})")} <= pairs


def test_long_sequences_fold_the_middle_steps():
    L, out = viz.example("hello", steps=30, backward=False)
    d = Dot(viz.draw(L, max_steps=12, wrap=0).source)  # one row: one Σ edge per copy (wrapped: below)
    kept = list(range(1, 7)) + list(range(25, 31))
    assert [c for c in d.clusters if c != "cluster_fold"] == [f"cluster_{t}" for t in kept]
    assert d.clusters["cluster_fold"] == "t = 7 … 24"
    fold = d.id("… 18 steps …")
    W = d.id("W")
    into_W = [(d.label(t), a) for t, h, a in d.edges if h == W]
    assert len(into_W) == 12 + 1 and [lab for lab, a in into_W if 'taillabel="Σ ×18"' in a] == ["… 18 steps …"]
    states = [(d.label(t), d.label(h)) for t, h, _ in d.edges_of_class("state")]
    assert ("s(6)", "… 18 steps …") in states and ("… 18 steps …", "a(25)") in states
    assert not any(f"({t})" in n["label"] for n in d.nodes.values() for t in range(7, 25))
    assert fold in d.nodes and len(Dot(viz.draw(L, max_steps=None).source).clusters) == 30
    # wrapped (rows 1–4, 5 6 fold, 25–27, 28–30): each row's copies and the fold sum into the row's
    # junction, the junctions chain row to row into W
    d = Dot(viz.draw(L, max_steps=12).source)
    into = {}
    for t, h, a in d.edges_of_class("sum"):
        into.setdefault(d.label(h), []).append((d.label(t), a))
    assert [lab for lab, _ in into["W"]] == ["Σ W(1…30)"]
    assert sorted(lab for lab, _ in into["Σ W(1…30)"]) == ["W(28)", "W(29)", "W(30)", "Σ W(1…27)"]
    assert sorted(lab for lab, _ in into["Σ W(1…27)"]) == ["W(25)", "W(26)", "W(27)", "Σ W(1…24)"]
    assert sorted(lab for lab, _ in into["Σ W(1…24)"]) == ["W(5)", "W(6)", "Σ W(1…4)", "… 18 steps …"]
    assert sorted(lab for lab, _ in into["Σ W(1…4)"]) == [f"W({t})" for t in range(1, 5)]


def test_a_thousand_steps_draw_folded():
    L, out = viz.example("deep", steps=1000)
    d = Dot(viz.draw(L).source)  # default max_steps=12; the walk over ~15,000 nodes is iterative
    assert len(d.clusters) == 13 and d.clusters["cluster_fold"] == "t = 7 … 994"
    assert d.ids("… 988 steps …")


def test_gradient_colours_and_copy_norms_after_backward(hello, hello_grads):
    L, out = hello_grads
    d = Dot(viz.draw(L).source)
    W_steps = out.tape.step_grads(out.model.W)
    for t, copy in zip(out.tape.steps, out.tape.copies(out.model.W)):
        full = d.nodes[d.id(f"W({t})")]["full"]
        assert full == f'"W({t})\\n{fmt(np.linalg.norm(W_steps[t - 1]))}"'  # the norm under the name
        assert f'tooltip="‖∂L/∂W({t})‖ = {fmt(np.linalg.norm(W_steps[t - 1]))}"' in d.nodes[d.id(f"W({t})")]["attrs"]
    norms = [np.linalg.norm(g) for g in W_steps]
    assert norms[0] == 0  # s(0) = 0, so ∂L/∂W(1) = s(0)ᵀ δ(1) = 0: drawn grey, a true zero
    assert f'fillcolor="{ZERO}"' in d.nodes[d.id("W(1)")]["attrs"]
    # each copy's fill is matplotlib's viridis at LogNorm(its norm) over the norms drawn
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm
    drawn = [float(m) for m in re.findall(r'tooltip="‖∂L/∂[^‖]*‖ = ([0-9.e-]+)"', d.source)]
    scale = LogNorm(vmin=min(x for x in drawn if x > 0), vmax=max(drawn))
    for t in (2, 3, 4):
        fill = re.search(r'fillcolor="(#\w+)"', d.nodes[d.id(f"W({t})")]["attrs"]).group(1)
        expected = colormaps[CMAP](float(scale(norms[t - 1])))
        assert np.allclose([int(fill[k:k + 2], 16) / 255 for k in (1, 3, 5)], expected[:3], atol=0.02), t
    assert "legend" in d.nodes and "‖∂L/∂·‖ (log)" in d.source and "not<BR/>recorded" in d.source
    assert re.search(r'class=sum color="#[0-9a-f]{6}"', d.source)  # Σ edges coloured too
    # before backward: no colours, no norms, no legend
    plain = Dot(viz.draw(hello[0]).source)
    assert "legend" not in plain.nodes and "‖∂L" not in plain.source
    assert "‖∂L" not in viz.draw(L, show_grads=False).source


def test_log_scale_ends_and_the_two_states_outside_it():
    from matplotlib import colormaps
    from matplotlib.colors import to_hex
    scale = LogScale([1e-3, 0.1, 10.0, None, 0.0])
    assert scale.colour(1e-3) == to_hex(colormaps[CMAP](0.0)) and scale.colour(10.0) == to_hex(colormaps[CMAP](1.0))
    assert scale.position(0.1) == pytest.approx(0.5)  # halfway on the log scale
    assert scale.colour(0.0) == ZERO and scale.colour(None) == "#ffffff"
    assert LogScale([2.0]).colour(2.0) == to_hex(colormaps[CMAP](1.0))


def test_rolled_view_is_derived_from_the_recorded_graph(hello):
    L, _ = hello
    d = Dot(viz.draw(L, view="rolled").source)
    assert {n["label"] for n in d.nodes.values()} == {"x(t)", "s(0)", "s(t)", "y(t)", "L(t)", "L"}
    edges = {(d.label(t), d.label(h)): a for t, h, a in d.edges}
    assert 'label=" W "' in edges[("s(t)", "s(t)")] and "class=state" in edges[("s(t)", "s(t)")]
    assert 'label=" U "' in edges[("x(t)", "s(t)")] and 'label=" V "' in edges[("s(t)", "y(t)")]
    assert ("y(t)", "L(t)") in edges and ("L(t)", "L") in edges
    assert not d.clusters


def test_ops_view_shows_every_recorded_op_with_shapes(hello):
    from viz.graph import walk
    L, out = hello
    d = Dot(viz.draw(L, view="ops").source)
    graph = walk(L)
    assert len(d.nodes) == len(graph)  # every tensor of the walk, parameters and constants included
    full = {n["full"] for n in d.nodes.values()}
    assert '"a(2)\\naffine  3"' in full and '"W(3)\\ncopy  3×3"' in full and '"y(2)\\nlinear  4"' in full
    # a(t) = x(t) U(t) + s(t−1) W(t) + b(t) is one node with those five inputs, in that order
    a2 = next(t for t in graph.nodes if t.name == "a(2)")
    assert [p.name for p in a2.parents] == ["x(2)", "U(2)", "s(1)", "W(2)", "b(2)"]
    assert sum(1 for n in d.nodes.values() if n["label"] in ("a(t)", "affine") or "affine" in n["full"]) == out.T
    assert all(d.nodes[i]["cluster"] == f"cluster_{graph.nodes[int(i[1:])].step}"
               for i in d.nodes if graph.nodes[int(i[1:])].step is not None)


def test_drawing_after_backward_and_deterministic_ids():
    L1, _ = viz.example("hello")  # backward already ran: the saved closures are freed
    L2, _ = viz.example("hello")
    assert viz.draw(L1).source == viz.draw(L2).source  # ids from a counter in walk order, not id()
    ids = re.findall(r"^\s*(n\d+) \[", viz.draw(L1).source, re.M)
    assert ids and all(re.fullmatch(r"n\d+", i) for i in ids) and len(set(ids)) == len(ids)
    for view in viz.VIEWS:
        assert viz.draw(L1, view=view).source == viz.draw(L1, view=view).source


def test_names_a_tensor_name_wins_and_unnamed_graphs_still_draw():
    W = Parameter(np.eye(2), name="Whh")
    tape = Unroll(shared=[W])
    h = Tensor(np.ones(2))
    for t in (1, 2, 3):
        with tape.step(t):
            h = (h @ W).tanh()
    loss = h.sum()
    hidden = h
    d = Dot(viz.draw(loss, names={"hidden": hidden, "W_alias": W}).source)
    assert d.ids("Whh") and not d.ids("W_alias")  # .name wins over names=
    assert d.ids("hidden") and [d.label(c) for c in d.of_class("copy")] == ["Whh(1)", "Whh(2)", "Whh(3)"]
    # nothing but the output named: the unnamed ops stay, labelled by op, one cluster per step
    d2 = Dot(viz.draw(loss).source)
    assert len(d2.clusters) == 3 and len(d2.ids("tanh")) == 3 and len(d2.edges_of_class("sum")) == 3
    states = [(d2.label(t), d2.label(h)) for t, h, _ in d2.edges_of_class("state")]
    assert states == [("const", "matmul"), ("tanh", "matmul"), ("tanh", "matmul")]
    # rolled: the three steps' tanh are one role, with the recurrence as a self-loop through Whh
    rolled = Dot(viz.draw(loss, view="rolled").source)
    assert [(rolled.label(t), rolled.label(h), 'label=" Whh "' in a) for t, h, a in rolled.edges
            if "class=state" in a] == [("const", "tanh", True), ("tanh", "tanh", True)]


def test_bad_arguments_are_named():
    L, _ = viz.example("hello", backward=False)
    with pytest.raises(ValueError, match="view must be one of"):
        viz.draw(L, view="folded")
    with pytest.raises(ValueError, match="max_steps must be an integer >= 2"):
        viz.draw(L, max_steps=1)
    with pytest.raises(ValueError, match="cannot tell the format"):
        viz.render(L, "graph.jpeg")
    with pytest.raises(TypeError, match="expected a Tensor"):
        viz.draw("L")


def test_deep_example_is_the_lecture_sequence():
    L, out = viz.example("deep", backward=False)
    vocab = ["d", "e", "p", "<stop>"]
    assert [vocab[i] for i in np.argmax(out.inputs, axis=-1)] == ["d", "e", "e", "p"]
    assert [vocab[i] for i in out.targets] == ["e", "e", "p", "<stop>"]
    L8, out8 = viz.example("deep", steps=8, backward=False)
    assert [vocab[i] for i in out8.targets] == ["e", "e", "p", "<stop>", "d", "e", "e", "p"]


@needs_dot
def test_render_pdf_and_svg(tmp_path, hello_grads):
    L, _ = hello_grads
    pdf = viz.render(L, tmp_path / "hello.pdf")
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", pdf], capture_output=True, text=True, check=True).stdout
        assert re.search(r"^Pages:\s+1$", info, re.M)
    svg = viz.render(L, tmp_path / "hello.svg", view="rolled")
    text = open(svg, encoding="utf-8").read()
    assert "<svg" in text and "s(t)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.pdf", "hello.svg"]  # no stray .gv files


def test_missing_dot_gives_install_instructions_and_dot_output_still_works(tmp_path, monkeypatch, capsys):
    L, _ = viz.example("hello", backward=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` anywhere
    with pytest.raises(viz.GraphvizNotFound, match="apt-get install graphviz") as e:
        viz.render(L, tmp_path / "hello.pdf")
    assert "brew install graphviz" in str(e.value) and "conda" in str(e.value)
    assert not (tmp_path / "hello.pdf").exists()
    assert "digraph" in open(viz.render(L, tmp_path / "hello.dot")).read()
    assert viz.draw(L).source.startswith("digraph")
    assert main(["render", "-o", str(tmp_path / "cli.pdf")]) == 1
    assert "Install Graphviz" in capsys.readouterr().err
    paths = viz.write_demo_figures(tmp_path / "out")  # the demo falls back to the DOT sources
    assert [p.rsplit("/", 1)[1] for p in paths] == ["hello-unrolled.dot", "hello-rolled.dot"]


def test_cli_render(tmp_path, capsys):
    out = tmp_path / "deep.dot"
    assert main(["render", "--example", "deep", "--view", "rolled", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and "s(t)" in out.read_text()
    assert main(["render", "--steps", "20", "--max-steps", "6", "-o", str(tmp_path / "h.gv")]) == 0
    assert "… 14 steps …" in (tmp_path / "h.gv").read_text()
    assert main(["render", "--format", "dot", "--no-grads", "-o", str(tmp_path / "plain")]) == 0
    assert "‖∂L" not in (tmp_path / "plain").read_text()
    assert main(["render", "-o", str(tmp_path / "x.txt")]) == 2
    assert main(["render", "--format", "svg", "-o", str(tmp_path / "x.pdf")]) == 2
    with pytest.raises(SystemExit) as stop:  # refused while parsing (tests/test_viz_cli.py)
        main(["render", "--steps", "0", "-o", str(tmp_path / "x.dot")])
    assert stop.value.code == 2 and "argument --steps: expected an integer ≥ 1, got 0" in capsys.readouterr().err


@needs_dot
def test_write_demo_figures(tmp_path):
    paths = viz.write_demo_figures(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["hello-unrolled.pdf", "hello-rolled.pdf"]
    for p in paths:
        assert open(p, "rb").read(5) == b"%PDF-"


def test_sigma_tokens_values_and_the_plain_graph_title(hello_grads):
    L, out = hello_grads
    d = Dot(viz.draw(L, sigma=("W",), inputs="hell", targets="ello").source)
    into = {d.label(h) for t, h, a in d.edges_of_class("sum")}
    assert into == {"W"} and len(d.edges_of_class("sum")) == out.T  # Σ only into W, one per step
    assert d.nodes[d.id("x(1)")]["full"] == "\"x(1)\\n'h'\"" and "target 'e'" in d.nodes[d.id("L(1)")]["full"]
    values = Dot(viz.draw(L, show_values=True).source)
    loss1 = float(out.losses[0].data)
    assert f"= {loss1:.4g}" in values.nodes[values.id("L(1)")]["full"]
    assert "[" in values.nodes[values.id("s(2)")]["full"] and "[" not in values.nodes[values.id("W(2)")]["full"]
    a = Parameter(np.array([1.0, 2.0]), name="a")
    y = (a * a).sum()
    y.backward()
    plain = viz.draw(y, show_values=True).source
    assert 'label="expression graph: 2 ops, no time steps"' in plain and "= 5" in plain
    assert "unrolled graph" not in plain


def test_lstm_rolled_view_keeps_the_cell_state_loop():
    from tinygrad_rnn import nn
    model = nn.RNN(4, 3, 4, cell="lstm", seed=0)
    L, _ = model.loss(np.eye(4)[[0, 1, 2, 2]], [1, 2, 2, 3])
    d = Dot(viz.draw(L, view="rolled").source)
    loops = {d.label(t) for t, h, a in d.edges if t == h and "class=state" in a}
    assert loops == {"s(t)", "C(t)"}  # h and the cell state each carried to the next step
    unrolled = Dot(viz.draw(L).source)  # and both chains in the unrolled view's recurrence
    states = {(d_t, d_h) for d_t, d_h in ((unrolled.label(t), unrolled.label(h))
                                          for t, h, _ in unrolled.edges_of_class("state"))}
    assert any(t == "C(1)" for t, _ in states) and any(t == "s(1)" for t, _ in states)
