"""viz.replay: ∂L/∂s(t), ∂L/∂a(t), … coloured after a plain L.backward() (no retain_grad), checked against
the BPTT recursion written out in numpy, finite differences, and retain_grad runs of every cell."""
import re

import numpy as np
import pytest

pytest.importorskip("graphviz")

import viz  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402
from viz.colours import LogScale, ZERO  # noqa: E402
from viz.graph import walk  # noqa: E402
from viz.replay import recorded_gradients  # noqa: E402

XS, TARGETS = np.eye(4)[[0, 1, 2, 2]], [1, 2, 2, 3]  # "hell" -> "ello"


def lecture_grads(model, xs, targets):
    """(∂L/∂s(t), ∂L/∂a(t)) for t = 1..T by the lecture's recursion, in numpy float64:
    ∂L/∂s_t = (p_t − onehot_t) Vᵀ + ∂L/∂a_{t+1} Wᵀ,  ∂L/∂a_t = ∂L/∂s_t ⊙ (1 − s_t²)."""
    U, W, b, V, c = (np.asarray(p.data, np.float64) for p in (model.U, model.W, model.b, model.V, model.c))
    s, states = np.zeros(W.shape[0]), []
    for x in xs:
        s = np.tanh(x @ U + s @ W + b)
        states.append(s)
    ds, da, next_da = [None] * len(xs), [None] * len(xs), np.zeros(W.shape[0])
    for t in reversed(range(len(xs))):
        z = states[t] @ V + c
        p = np.exp(z - z.max())
        p /= p.sum()
        ds[t] = (p - np.eye(len(p))[targets[t]]) @ V.T + next_da @ W.T
        da[t] = next_da = ds[t] * (1 - states[t] ** 2)
    return ds, da


def loss_from_state(model, xs, targets, t, s_t):
    """L as a function of s(t) (1-based t): the losses from step t on, the earlier ones fixed."""
    U, W, b, V, c = (np.asarray(p.data, np.float64) for p in (model.U, model.W, model.b, model.V, model.c))
    total, s = 0.0, np.zeros(W.shape[0])
    for k, x in enumerate(xs, start=1):
        s = s_t if k == t else (np.tanh(x @ U + s @ W + b) if k != t else s)
        z = s @ V + c
        total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[targets[k - 1]]
    return total


@pytest.fixture(scope="module")
def lecture():
    model = nn.RNN(4, 3, 4, seed=0, dtype=np.float64)
    L, out = model.loss(XS, TARGETS)
    L.backward()  # plain: nothing but the leaves and copies keep gradients
    assert all(s.grad is None for s in out.states[1:])
    return model, L, out


def test_recovered_state_gradients_are_the_bptt_recursion_and_finite_differences(lecture):
    model, L, out = lecture
    graph = walk(L)
    grads = recorded_gradients(graph)
    ds, da = lecture_grads(model, XS, TARGETS)
    for t in range(1, 5):
        np.testing.assert_allclose(grads[graph.index[out.states[t]]], ds[t - 1], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads[graph.index[out.preactivations[t - 1]]], da[t - 1], rtol=1e-10,
                                   atol=1e-12)
    # and a central difference of L in s(2): the independent check of the recursion itself
    s2, h = np.asarray(out.states[2].data, np.float64), 1e-6
    fd = [(loss_from_state(model, XS, TARGETS, 2, s2 + h * e) - loss_from_state(model, XS, TARGETS, 2, s2 - h * e))
          / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grads[graph.index[out.states[2]]], fd, rtol=1e-6, atol=1e-8)
    assert out.states[2].grad is None  # nobody's .grad was touched


def test_states_are_coloured_by_their_gradient_after_a_plain_backward(lecture):
    model, L, out = lecture
    source = viz.draw(L).source
    ds, da = lecture_grads(model, XS, TARGETS)
    tooltips = {name: float(v) for name, v in re.findall(r'tooltip="‖∂L/∂([^‖]+)‖ = ([0-9.e-]+)"', source)}
    fills = dict(re.findall(r'\[label="?([^"\\ ]+)[^\]]*?fillcolor="(#\w+)"', source))
    scale = LogScale(list(tooltips.values()))
    for t in range(1, 5):
        assert tooltips[f"s({t})"] == pytest.approx(np.linalg.norm(ds[t - 1]), rel=2e-3)
        assert tooltips[f"a({t})"] == pytest.approx(np.linalg.norm(da[t - 1]), rel=2e-3)
        assert fills[f"s({t})"] == scale.colour(tooltips[f"s({t})"]) != ZERO


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_intermediate_of_gated_cells_matches_retain_grad(cell):
    def run(retain):
        model = nn.RNN(4, 3, 4, cell=cell, seed=1, dtype=np.float64)
        L, _ = model.loss(XS, TARGETS)
        graph = walk(L)
        if retain:
            for t in graph.nodes:
                if t.parents:
                    t.retain_grad()
        L.backward()
        return graph
    plain, retained = run(False), run(True)
    grads = recorded_gradients(plain)
    inner = [i for i, t in enumerate(retained.nodes) if t.parents]
    assert len(inner) > 80 and all(grads[i] is not None for i in inner)
    for i in inner:
        np.testing.assert_allclose(grads[i], retained.nodes[i].grad, rtol=1e-9, atol=1e-12)


def test_batch_of_sequences_and_not_recorded_is_not_zero():
    model = nn.RNN(4, 3, 4, seed=0, dtype=np.float64)
    xs = np.stack([XS, XS[::-1]], axis=1)  # (T, B=2, n)
    L, out = model.loss(xs, np.array([TARGETS, TARGETS[::-1]]).T)
    graph = walk(L)
    for s in out.states[1:]:
        s.retain_grad()
    L.backward()
    grads = recorded_gradients(graph)
    for s in out.states[1:]:  # B = 2 rows ≤ d + 1: recovered exactly from V(t), c(t)
        np.testing.assert_allclose(grads[graph.index[s]], s.grad, rtol=1e-8, atol=1e-12)
    # a batch too large to recover from d + 1 = 4 numbers per row: drawn "not recorded", dashed, not grey
    big = nn.RNN(4, 3, 4, seed=0, dtype=np.float64)
    xs = np.random.default_rng(0).normal(size=(3, 6, 4))
    L, out = big.loss(xs, np.zeros((3, 6), dtype=int))
    L.backward()
    source = viz.draw(L).source
    line = next(ln for ln in source.splitlines() if 'label="s(2)"' in ln)
    assert 'fillcolor="#ffffff"' in line and "dashed" in line and "tooltip" not in line
    w1 = next(ln for ln in source.splitlines() if 'label="W(1)' in ln)
    assert f'fillcolor="{ZERO}"' in w1  # the true zero ∂L/∂W(1) stays grey


def test_no_backward_no_gradients():
    model = nn.RNN(4, 3, 4, seed=0)
    L, _ = model.loss(XS, TARGETS)
    assert recorded_gradients(walk(L)) == {}


def test_keep_gradients_shows_the_engines_own_gradients_even_where_viz_has_no_rule():
    import tinygrad_rnn.functional as F
    from tinygrad_rnn import Parameter, Tensor
    rng = np.random.default_rng(1)

    def record():
        W = Parameter(rng.normal(size=(3, 3)), name="W")
        z = Tensor(np.arange(3.0)) @ W
        z.name = "z"
        h = F.softmax(z, -1)  # softmax: no rule in viz.replay, so ∂L/∂z cannot be recovered
        y = (h * h).sum()
        y.name = "y"
        return y, z, h

    y, z, _ = record()
    y.backward()
    assert recorded_gradients(walk(y))[walk(y).index[z]] is None  # a plain backward: not recorded
    assert re.search(r'\[label=z [^]]*style="[^"]*dashed', viz.draw(y).source)  # drawn as such
    y, z, h = record()
    viz.keep_gradients(y)
    y.backward()
    graph = walk(y)
    assert np.array_equal(recorded_gradients(graph)[graph.index[z]], z.grad)  # the engine's own array
    p = h.data  # softmax's Jacobian: ∂y/∂z = p ⊙ (2p − Σ 2p²)
    expected = p * (2 * p - np.sum(2 * p * p))
    assert np.allclose(z.grad, expected)
    tip = re.search(r'tooltip="‖∂L/∂z‖ = ([^"]+)"', viz.draw(y).source)
    assert tip and float(tip.group(1)) == pytest.approx(np.linalg.norm(expected), rel=1e-2)


def test_keep_gradients_agrees_with_the_recovery_for_every_cell():
    for cell in ("rnn", "gru", "lstm"):
        plain, kept = (nn.RNN(4, 3, 4, cell=cell, seed=0, dtype=np.float64) for _ in range(2))
        L1, _ = plain.loss(XS, TARGETS)
        L1.backward()
        L2, _ = kept.loss(XS, TARGETS)
        viz.keep_gradients(L2)
        L2.backward()
        g1, g2 = recorded_gradients(walk(L1)), recorded_gradients(walk(L2))
        assert g1.keys() == g2.keys()
        for i, g in g2.items():
            assert g is not None
            if g1[i] is not None:
                assert np.allclose(g1[i], g, atol=1e-9), (cell, i)
