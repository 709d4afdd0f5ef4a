"""viz: wrapped drawings sum each row's copies in the row (viz.row_sums) — checked on the laid-out output.

Each row of step boxes has one junction per shared parameter, "Σ W(1…8)", holding the running sum of the
copies' gradients up to the row's last step; junctions chain row to row into the parameter. Read from
graphviz's -Tjson layout: every copy → junction edge stays between the neighbouring rows of boxes (it
crosses no other row), and the numbers on the junctions are the running sums of the engine's ∂L/∂W(t).
"""
import shutil

import numpy as np
import pytest

graphviz = pytest.importorskip("graphviz")
pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")

import viz  # noqa: E402
from viz.colours import fmt  # noqa: E402
from viz.graph import is_copy, walk  # noqa: E402

from test_viz_sigma import layout, lecture, spline  # noqa: E402


def rows_of_boxes(lay, rankdir):
    """[(lo, hi, {cluster names})] along the axis across the rows (y for BT/TB, x for LR/RL), in page
    order of the rows' positions: boxes whose ranges overlap share a row."""
    across = (1, 3) if rankdir in ("BT", "TB") else (0, 2)
    boxes = []
    for obj in lay["objects"]:
        if obj.get("name", "").startswith("cluster_"):
            bb = list(map(float, obj["bb"].split(",")))
            boxes.append((bb[across[0]], bb[across[1]], obj["name"]))
    boxes.sort()
    rows = []
    for lo, hi, name in boxes:
        if rows and lo < rows[-1][1]:
            rows[-1] = (rows[-1][0], max(hi, rows[-1][1]), rows[-1][2] | {name})
        else:
            rows.append((lo, hi, {name}))
    return rows


def is_subgraph(obj):
    return obj.get("name", "").startswith(("cluster_", "%"))  # a box, or an anonymous {rank=same; …}


def cluster_of(lay):
    """{node gvid: cluster name} of the nodes inside step boxes."""
    found = {}
    for obj in lay["objects"]:
        if obj.get("name", "").startswith("cluster_"):
            for n in obj.get("nodes", []):
                found[n] = obj["name"]
    return found


def arrow(e):
    return (e["head"], e["tail"]) if e.get("dir") == "back" else (e["tail"], e["head"])


CASES = [("hello", 8, "BT", None), ("hello", 50, "BT", None), ("deep", 1000, "BT", None), ("hello", 30, "TB", None),
         ("gru", 13, "BT", None), ("lstm", 10, "TB", None), ("hello", 50, "BT", ("W",)), ("hello", 12, "LR", 4)]


@pytest.mark.parametrize("name,T,rankdir,option", CASES)
def test_every_copy_sums_into_a_junction_inside_its_own_row(name, T, rankdir, option):
    if name in ("hello", "deep"):
        L, model = viz.example(name, steps=T)[0], None
    else:
        L, model = lecture(name, T)
    options = {"sigma": option} if isinstance(option, tuple) else {"wrap": option}
    lay = layout(viz.draw(L, model=model, rankdir=rankdir, **options))
    objects = {o["_gvid"]: o for o in lay["objects"] if not is_subgraph(o)}  # numbered apart from subgraphs
    rows = rows_of_boxes(lay, rankdir)
    assert len(rows) >= 2
    row_of_cluster = {c: r for r, (_, _, cs) in enumerate(rows) for c in cs}
    in_cluster = cluster_of(lay)
    axis = 1 if rankdir in ("BT", "TB") else 0
    into_junctions = 0
    for e in lay["edges"]:
        tail, head = arrow(e)
        if e.get("style") == "invis" or objects[head].get("class") != "rowsum" \
                or objects[tail].get("class") == "rowsum":
            continue
        into_junctions += 1
        r = row_of_cluster[in_cluster[tail]]
        # between the neighbouring rows: above the next row's boxes, below the previous row's
        lo = rows[r - 1][1] if r > 0 else -np.inf
        hi = rows[r + 1][0] if r + 1 < len(rows) else np.inf
        along = spline(e)[:, axis]
        assert lo - 1 < along.min() and along.max() < hi + 1, (objects[tail]["label"], objects[head]["label"],
                                                               (along.min(), along.max()), (lo, hi))
    assert into_junctions > 0
    # one chain per parameter with Σ edges (and one for L): junction to junction, the last into the parameter
    labels = {g: o.get("label", "").split("\\n")[0] for g, o in objects.items()}
    targets = {labels[h] for t, h in map(arrow, lay["edges"]) if objects[t].get("class") == "rowsum"
               and objects[h].get("class") not in ("rowsum", None)}
    expected = {"W"} if option == ("W",) else ({"U", "W", "b", "V", "c"} if name in ("hello", "deep") else
                                               {f"{w}_{k}" for w in ("weight", "bias") for k in ("ih", "hh")}
                                               | {"V", "c"})
    assert targets == expected | {"L"}, targets


def test_junctions_hold_the_running_sums_of_the_engines_copy_gradients():
    L, _ = viz.example("hello", steps=8)
    source = viz.draw(L).source
    copies = {}  # parameter name -> {t: the engine's ∂L/∂P(t)}
    for t in walk(L).nodes:
        if is_copy(t):
            copies.setdefault(t.parents[0].name, {})[t.step] = np.asarray(t.grad, dtype=np.float64)
    rows = {"Σ W(1…4)": range(1, 5), "Σ W(1…8)": range(1, 9), "Σ b(1…4)": range(1, 5), "Σ V(1…8)": range(1, 9)}
    for label, steps in rows.items():
        name = label[2]
        norm = np.linalg.norm(sum(copies[name][t] for t in steps))
        assert f'label="{label}\\n{fmt(norm)}"' in source, (label, fmt(norm))
    W = next(t.parents[0] for t in walk(L).nodes if is_copy(t) and t.parents[0].name == "W")
    assert fmt(np.linalg.norm(W.grad)) == fmt(np.linalg.norm(sum(copies["W"].values())))  # the chain's end
    assert 'label="Σ L(1…4)\\n1"' in source and 'label="Σ L(1…8)\\n1"' in source  # ∂L/∂(a partial sum) = 1


def test_one_row_keeps_one_sigma_edge_per_copy_and_no_junctions():
    L, _ = viz.example("hello", steps=6)
    source = viz.draw(L).source
    assert "rowsum" not in source and source.count('taillabel="Σ"') == 5 * 6
