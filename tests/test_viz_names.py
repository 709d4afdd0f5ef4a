"""viz: any name renders as its own plain text — no DOT or HTML injection, no failure because of a name."""
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

graphviz = pytest.importorskip("graphviz")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

import viz  # noqa: E402
from tinygrad_rnn import Parameter, Tensor, Unroll  # noqa: E402
from viz.names import MAX_NAME, display_name  # noqa: E402

INJECTION = '<a> ] ; INJECTED [label="INJECTED" shape=star] ; z [label=<b>'
IMAGE = 'x" image="/etc/hostname" label="y'
HOSTILE = [INJECTION, IMAGE, "<b>unbalanced", "</TABLE>>", "<", "a\x00b", "tab\there\nnewline", "a\\nb",
           'ends in a backslash \\', 'quote " inside', "é ∂ 🙂", "x" * 20000, "\x7f\x85"]
SVG = "{http://www.w3.org/2000/svg}"


def graph_named(state_name, param_name="W"):
    W = Parameter(np.eye(2) * 0.5, name=param_name)
    tape, h = Unroll(shared=[W]), Tensor(np.ones(2))
    for t in (1, 2):
        with tape.step(t):
            h = (h @ W).tanh()
            h.name = state_name
    loss = h.sum()
    loss.backward()
    return loss


def shown_texts(svg):
    """{node title (its DOT id): [text lines drawn in it]} of an SVG from dot."""
    root = ET.fromstring(svg)
    shown = {}
    for g in root.iter(f"{SVG}g"):
        if "node" in (g.get("class") or "").split():
            title = g.find(f"{SVG}title").text
            shown[title] = [t.text or "" for t in g.iter(f"{SVG}text")]
    return shown


def test_display_name_is_printable_short_text():
    assert display_name("s(3)") == "s(3)" and display_name(None) is None
    assert display_name(123) == "123" and display_name(("h", 2)) == "('h', 2)"
    assert display_name("a\x00b\nc") == "a␀b␊c"
    long = display_name("x" * 20000)
    assert len(long) == MAX_NAME and long.endswith("…")
    assert display_name("\x7f\x85\ud800") == "␡��"


@needs_dot
@pytest.mark.parametrize("view", viz.VIEWS)
def test_hostile_names_render_as_their_own_text(view):
    for name in HOSTILE:
        loss = graph_named(name, param_name=name)
        g = viz.draw(loss, view=view, title=name)
        svg = g.pipe(format="svg").decode()  # never fails because of a name
        shown = display_name(name)
        drawn = shown_texts(svg)
        assert set(drawn) <= set(re.findall(r"^\s*(\w+) \[", g.source, re.M))  # no node added by a name
        rest = " ".join(t.replace(shown, "") for texts in drawn.values() for t in texts)
        assert "INJECTED" not in rest and "hostname" not in rest and "star" not in rest
        assert not list(ET.fromstring(svg).iter(f"{SVG}image"))  # no file read in
        texts = [t for texts in drawn.values() for t in texts]
        assert shown in texts, (name, texts)  # the name itself, on a line of its own


@needs_dot
def test_a_backslash_n_in_a_name_is_not_a_line_break():
    loss = graph_named("a\\nb")
    svg = viz.draw(loss).pipe(format="svg").decode()
    assert ["a\\nb"] in shown_texts(svg).values()  # one line reading a\nb


@needs_dot
def test_non_str_names_and_names_dict_keys():
    loss = graph_named(None)
    h = loss.parents[0]
    h.name = 42  # set behind the constructor's back: the drawing still works
    svg = viz.draw(loss, names={("tuple", "key"): loss}).pipe(format="svg").decode()
    texts = [t for texts in shown_texts(svg).values() for t in texts]
    assert "42" in texts and "('tuple', 'key')" in texts
    h.name = np.array([1, 2])  # even a name with no truth value
    assert 'label="[1 2]"' in viz.draw(loss).source


def test_dot_source_has_no_injected_statements():
    loss = graph_named(INJECTION, param_name=IMAGE)
    for view in viz.VIEWS:
        source = viz.draw(loss, view=view).source
        # every line is one statement of ours: the name sits inside a quoted label, its quotes escaped
        assert 'image=' not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', source)
        assert 'shape=star' not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', source)


def labels_of(source):
    return re.findall(r'^\s*\w+ \[label="([^"\\]+)', source, re.M)


def test_repeated_parameter_names_get_their_module_path():
    from tinygrad_rnn import nn
    from viz.names import shortest_unique_suffixes
    assert shortest_unique_suffixes(["encoder.cell.W", "cell.W", None]) == ["encoder.cell.W", "cell.W", None]
    assert shortest_unique_suffixes(["encoder.embed.weight", "embed.weight", "head.weight"]) == \
        ["encoder.embed.weight", "embed.weight", "head.weight"]
    model = nn.Seq2Seq(5, 4, 3, bos=4, cell="rnn", seed=0)
    L, _, _ = model.loss(np.array([0, 1, 2]), np.array([1, 2]))
    L.backward()
    labels = labels_of(viz.draw(L, model=model).source)
    assert len(labels) == len(set(labels))  # no two nodes say the same (today: two "weight(4)")
    assert {"encoder.cell.W(3)", "cell.W(4)", "embed.weight(4)", "head.weight(4)", "encoder.cell.W",
            "cell.W"} <= set(labels)
    assert "bias(4)" in labels and "W(4)" not in labels  # a name that does not repeat stays bare
    numbered = labels_of(viz.draw(L).source)  # without the model: numbered in walk order, still distinct
    assert len(numbered) == len(set(numbered)) and {"W#1(3)", "W#2(4)", "weight#3(5)"} <= set(numbered)
    # the lecture RNN has no repeats: labels unchanged
    L1, _ = viz.example("hello", backward=False)
    assert "W(3)" in labels_of(viz.draw(L1).source)
