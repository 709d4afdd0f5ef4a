"""The analysis for every cell (rnn, gru, lstm), float64, against torch.autograd on the same weights
(RNN.to_torch) and finite differences: state Jacobians (an LSTM's (h, c) and its c → c carousel), the
BPTT contributions ∂L_t/∂P(k), explicit derivatives, gradient flow, and the architectures' recordings."""
import copy

import numpy as np
import pytest

from tinygrad_rnn import Tensor, nn
from tinygrad_rnn.analysis import (all_state_jacobians, contribution_norms, contributions, decompose,
                                   explicit_grad, gradient_flow, loss_state_gradients, record, state_jacobian,
                                   step_grads, step_jacobian, step_jacobians)

torch = pytest.importorskip("torch")
from torch.func import functional_call  # noqa: E402

CELLS = ["rnn", "gru", "lstm"]
HH = {"rnn": "W", "gru": "cell.weight_hh", "lstm": "cell.weight_hh"}
EPS = 1e-6


def network(cell, T=5, B=2, d=3, seed=2):
    rng = np.random.default_rng(seed)
    model = nn.RNN(4, d, 4, cell=cell, seed=seed, dtype=np.float64)
    for p in model.parameters():
        p.data = p.data * 2.5  # away from the linear regime: every Jacobian has structure
    xs = np.eye(4)[rng.integers(0, 4, size=(T, B))]
    targets = rng.integers(0, 4, size=(T, B))
    return model, xs, targets


def parameter(model, name):
    return dict(model.named_parameters())[name]


def torch_run(module, xs, state):
    """Steps of module.rnn from `state` (packed h or [h | c], shape (B, w)); returns the packed states."""
    d = module.rnn.hidden_size
    lstm = isinstance(module.rnn, torch.nn.LSTM)
    hc = (state[None, :, :d].contiguous(), state[None, :, d:].contiguous()) if lstm else state[None]
    packed = []
    for x in xs:
        _, hc = module.rnn(x[None], hc)
        packed.append(torch.cat([hc[0][0], hc[1][0]], -1) if lstm else hc[0])
    return packed


def torch_states(module, xs, w):
    state = torch.zeros(xs.shape[1], w, dtype=torch.float64)
    return [state] + torch_run(module, torch.from_numpy(xs), state)


@pytest.mark.parametrize("cell", CELLS)
def test_state_jacobians_match_torch_and_finite_differences(cell):
    model, xs, targets = network(cell)
    _, out = model.loss(xs, targets)
    module = model.to_torch()
    w = 2 * 3 if cell == "lstm" else 3
    states = torch_states(module, xs, w)
    J = all_state_jacobians(out, batch=1)
    assert J.shape == (6, 6, w, w)
    for t, k in [(1, 0), (3, 1), (5, 2), (5, 0), (4, 4)]:
        fn = lambda s: torch_run(module, torch.from_numpy(xs[k:t, 1:2]), s[None])[-1][0] if t > k else s  # noqa
        expected = torch.autograd.functional.jacobian(fn, states[k][1].detach()).numpy()
        np.testing.assert_allclose(J[t, k], expected, atol=1e-12)
        np.testing.assert_allclose(state_jacobian(out, t, k, batch=1), expected, atol=1e-12)
        # and by central differences of the torch forward
        numeric = np.zeros((w, w))
        for r in range(w):
            e = torch.zeros(w, dtype=torch.float64)
            e[r] = EPS
            state = states[k][1].detach()
            numeric[:, r] = ((fn(state + e) - fn(state - e)) / (2 * EPS)).detach().numpy()
        np.testing.assert_allclose(J[t, k], numeric, atol=1e-8)
    D = step_jacobians(out, batch=1)
    np.testing.assert_allclose(D, J[np.arange(1, 6), np.arange(0, 5)], atol=1e-14)
    for j in (1, 4):  # one step's Jacobian is a matrix of states: the same in either convention
        np.testing.assert_allclose(step_jacobian(out, j, batch=1), J[j, j - 1], atol=1e-14)
        np.testing.assert_allclose(step_jacobian(out, j, batch=1, convention="column"), J[j, j - 1], atol=1e-14)


def test_lstm_blocks_and_the_constant_error_carousel():
    model, xs, targets = network("lstm")
    _, out = model.loss(xs, targets)
    d = 3
    J = state_jacobian(out, 5, 1)
    np.testing.assert_allclose(state_jacobian(out, 5, 1, part="h"), J[:d, :d])
    np.testing.assert_allclose(state_jacobian(out, 5, 1, part="c"), J[d:, d:])
    # the carousel: Π_j diag(f_j), the forget gates recomputed by hand from the states
    W_ih, W_hh = model.cell.weight_ih.data, model.cell.weight_hh.data
    b = model.cell.bias_ih.data + model.cell.bias_hh.data
    h = [s.data[0] for s in out.states]
    carousel = np.eye(d)
    for j in range(2, 6):
        z = xs[j - 1, 0] @ W_ih + h[j - 1] @ W_hh + b
        f = 1 / (1 + np.exp(-z[d:2 * d]))
        carousel = np.diag(f) @ carousel
    np.testing.assert_allclose(state_jacobian(out, 5, 1, part="carousel"), carousel, atol=1e-14)
    assert not np.allclose(carousel, J[d:, d:])  # the full c → c block also has the paths through h
    with pytest.raises(ValueError, match="part='carousel' needs an LSTM"):
        state_jacobian(network("gru")[0].loss(xs, targets)[1], 3, 1, part="carousel")


def torch_step_loss(logits, target, loss="cross_entropy", alive=None):
    """One step's L_t in torch, as nn.RNN.loss sums it: over the batch (and for BCE the outputs), the rows
    of ended sequences (alive False) left out."""
    if loss == "bce":
        weight = None if alive is None else torch.from_numpy(alive.astype(np.float64))[:, None]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(target),
                                                                    weight=weight, reduction="sum")
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(target), reduction="sum")


def torch_contributions(module, xs, targets, name, loss="cross_entropy", lengths=None):
    """C[t−1, k−1] = ∂L_t/∂P(k) in torch: every step runs with its own copy of the weight (functional_call).
    With lengths, ended sequences keep their state (as nn.RNN does) and their steps count for nothing."""
    T, B = targets.shape[:2]
    weights = dict(module.rnn.named_parameters())
    d = module.rnn.hidden_size
    lstm = isinstance(module.rnn, torch.nn.LSTM)
    state = (torch.zeros(1, B, d, dtype=torch.float64),) * 2 if lstm else torch.zeros(1, B, d, dtype=torch.float64)
    copies, losses = [], []
    for t in range(T):
        copy = weights[name].detach().clone().requires_grad_()
        copies.append(copy)
        hs, new = functional_call(module.rnn, {**weights, name: copy}, (torch.from_numpy(xs[t:t + 1]), state))
        alive = None if lengths is None else np.asarray(lengths) > t
        if alive is not None:  # an ended sequence keeps its state
            keep = torch.from_numpy(alive)[None, :, None]
            new = tuple(torch.where(keep, n, o) for n, o in zip(new, state)) if lstm else torch.where(keep, new, state)
        state = new
        logits = module.out(state[0][0] if lstm else state[0])
        losses.append(torch_step_loss(logits, targets[t], loss, alive))
    C = np.zeros((T, T) + tuple(weights[name].shape))
    for t in range(T):
        grads = torch.autograd.grad(losses[t], copies[:t + 1], retain_graph=True)
        for k, g in enumerate(grads):
            C[t, k] = g.numpy()
    return C


@pytest.mark.parametrize("cell", CELLS)
def test_contributions_match_torch_with_a_copy_of_the_weight_per_step(cell):
    model, xs, targets = network(cell)
    L, out = model.loss(xs, targets)
    L.backward()
    module = model.to_torch()
    ours = {"rnn": ("W", "weight_hh_l0"), "gru": ("cell.weight_hh", "weight_hh_l0"),
            "lstm": ("cell.weight_hh", "weight_hh_l0")}[cell]
    P = parameter(model, ours[0])
    C = contributions(out, P)
    expected = torch_contributions(module, xs, targets, ours[1])
    np.testing.assert_allclose(C, np.swapaxes(expected, -1, -2), atol=1e-12)  # torch stores Wᵀ
    np.testing.assert_allclose(C.sum(axis=0), out.tape.step_grads(P), atol=1e-12)
    np.testing.assert_allclose(step_grads(out, P), out.tape.step_grads(P), atol=1e-12)
    np.testing.assert_allclose(contribution_norms(out, P), np.linalg.norm(C.reshape(5, 5, -1), axis=-1), atol=1e-12)
    for name, Q in model.named_parameters():  # every parameter, the output layer's included
        np.testing.assert_allclose(contributions(out, Q).sum(axis=(0, 1)), Q.grad, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(contributions(out, P, convention="column"), np.swapaxes(C, -1, -2))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss, lengths", [("bce", None), ("bce", [5, 3]), ("cross_entropy", [2, 5])])
def test_contributions_with_bce_and_padded_steps_match_torch(cell, loss, lengths):
    # loss="bce" (lecture 23's per-step BCE) and variable lengths: the analysis recomputes the output's own loss
    model, xs, targets = network(cell)
    if loss == "bce":
        targets = np.random.default_rng(9).uniform(size=targets.shape + (4,))
    L, out = model.loss(xs, targets, lengths=lengths, loss=loss)
    L.backward()
    P = parameter(model, HH[cell])
    expected = torch_contributions(model.to_torch(), out.inputs, out.targets, "weight_hh_l0", loss, lengths)
    C = contributions(out, HH[cell])  # by its dotted name
    np.testing.assert_allclose(C, np.swapaxes(expected, -1, -2), atol=1e-12)
    np.testing.assert_allclose(contribution_norms(out, P), np.linalg.norm(C.reshape(5, 5, -1), axis=-1), atol=1e-12)
    np.testing.assert_allclose(step_grads(out, P), out.tape.step_grads(P), atol=1e-12)
    for name, Q in model.named_parameters():
        np.testing.assert_allclose(contributions(out, Q).sum(axis=(0, 1)), Q.grad, atol=1e-12, err_msg=name)
    if lengths is not None:  # a step after every sequence ended reaches no loss
        assert not np.any(C[max(lengths):])


@pytest.mark.parametrize("cell", CELLS)
def test_contribution_rows_match_finite_differences_of_each_loss(cell):
    # row t of C summed over k is ∂L_t/∂P: central differences of the recorded L(t) alone
    model, xs, targets = network(cell, B=1)
    _, out = model.loss(xs, targets)
    P = parameter(model, HH[cell])
    C = contributions(out, P)
    for t in (2, 5):
        numeric = np.zeros(P.shape)
        for index in np.ndindex(P.shape):
            keep = P.data[index]
            P.data[index] = keep + EPS
            plus = model.loss(xs, targets)[1].losses[t - 1].item()
            P.data[index] = keep - EPS
            minus = model.loss(xs, targets)[1].losses[t - 1].item()
            P.data[index] = keep
            numeric[index] = (plus - minus) / (2 * EPS)
        np.testing.assert_allclose(C[t - 1].sum(axis=0), numeric, atol=1e-8)


@pytest.mark.parametrize("cell", CELLS)
def test_decompose_matches_torch_for_every_cell(cell):
    # the slide's Σ_k ∂s_t/∂s_k · ∂⁺s_k/∂W is the total ∂s_t/∂W: torch's Jacobian of s_t in weight_hh
    model, xs, targets = network(cell)
    _, out = model.loss(xs, targets)
    module = model.to_torch()
    weights = dict(module.rnn.named_parameters())
    w = 6 if cell == "lstm" else 3
    zero = torch.zeros(1, w, dtype=torch.float64)

    expected = torch.autograd.functional.jacobian(lambda W: torch_run_with(module, weights, W, xs[:4, 1:2], zero),
                                                  weights["weight_hh_l0"].detach()).numpy()[0]
    D = decompose(out, 4, batch=1)
    assert D.terms.shape == (4, w) + parameter(model, HH[cell]).shape and D.max_error < 1e-8
    np.testing.assert_allclose(D.terms.sum(axis=0), np.swapaxes(expected, -1, -2), atol=1e-10)
    np.testing.assert_allclose(D.terms[3], explicit_grad(out, 4, HH[cell], batch=1), atol=1e-14)
    column = decompose(out, 4, batch=1, convention="column")
    np.testing.assert_allclose(column.terms, np.swapaxes(D.terms, -1, -2), atol=1e-14)


def torch_run_with(module, weights, W, xs, state):
    """The packed state after the steps xs from `state`, with weight_hh_l0 = W (functional_call)."""
    d = module.rnn.hidden_size
    lstm = isinstance(module.rnn, torch.nn.LSTM)
    hc = (state[None, :, :d], state[None, :, d:]) if lstm else state[None]
    _, hc = functional_call(module.rnn, {**weights, "weight_hh_l0": W}, (torch.from_numpy(xs), hc))
    return torch.cat([hc[0][0], hc[1][0]], -1) if lstm else hc[0]


@pytest.mark.parametrize("cell", CELLS)
def test_explicit_grad_matches_torch_with_the_previous_state_held_fixed(cell):
    model, xs, targets = network(cell)
    _, out = model.loss(xs, targets)
    module = model.to_torch()
    w = 6 if cell == "lstm" else 3
    states = torch_states(module, xs, w)
    weights = dict(module.rnn.named_parameters())
    k = 3

    def step(W):  # s_k as a function of weight_hh with s_{k−1} a constant
        d = module.rnn.hidden_size
        prev = states[k - 1][0:1].detach()
        hc = (prev[None, :, :d], prev[None, :, d:]) if cell == "lstm" else prev[None]
        _, hc = functional_call(module.rnn, {**weights, "weight_hh_l0": W}, (torch.from_numpy(xs[k - 1:k, 0:1]), hc))
        return torch.cat([hc[0][0, 0], hc[1][0, 0]]) if cell == "lstm" else hc[0, 0]
    expected = torch.autograd.functional.jacobian(step, weights["weight_hh_l0"].detach()).numpy()
    E = explicit_grad(out, k, parameter(model, HH[cell]))
    np.testing.assert_allclose(E, np.swapaxes(expected, -1, -2), atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_flow_measures_the_state_jacobians(cell):
    model, xs, targets = network(cell, T=8, B=1)
    _, out = model.loss(xs, targets)
    flow = gradient_flow(out)
    J = all_state_jacobians(out)
    for t, k in [(8, 1), (5, 3), (2, 1)]:
        assert flow.norms[t, k] == pytest.approx(np.linalg.norm(J[t, k], 2), rel=1e-10)
    for g in flow.gaps:
        assert flow.jacobian_norms[g - 1] == pytest.approx(max(np.linalg.norm(J[k + g, k], 2) for k in range(1, 9 - g)))
    assert np.isfinite(flow.bound).all() == (cell == "rnn")
    only_last = gradient_flow(out, ends=[8])
    np.testing.assert_allclose(only_last.jacobian_norms, flow.norms[8, 7:0:-1], rtol=1e-10)
    assert cell in flow.summary() or "tanh" in flow.summary()


@pytest.mark.parametrize("cell", CELLS)
def test_loss_state_gradients_match_torch(cell):
    model, xs, targets = network(cell, B=1)
    _, out = model.loss(xs, targets)
    module = model.to_torch()
    w = 6 if cell == "lstm" else 3
    g = loss_state_gradients(out, 4)
    states = torch_states(module, xs, w)
    for k in range(0, 5):
        leaf = states[k].detach().requires_grad_()
        s4 = torch_run(module, torch.from_numpy(xs[k:4]), leaf)[-1] if k < 4 else leaf
        L4 = torch.nn.functional.cross_entropy(module.out(s4[:, :3]), torch.from_numpy(targets[3]), reduction="sum")
        np.testing.assert_allclose(g[k], torch.autograd.grad(L4, leaf)[0].numpy(), atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_architectures_are_analysed_through_a_recording(cell):
    rng = np.random.default_rng(0)
    clf = nn.SequenceClassifier(2, 3, 1, cell=cell, seed=1, dtype=np.float64)
    xs = rng.random((6, 2, 2))
    y = rng.random(2)
    loss, _ = clf.loss(xs, y, kind="regression")
    loss.backward()
    rec = record(clf, xs, y, kind="regression")
    for name, P in clf.named_parameters():
        C = contributions(rec, P)
        np.testing.assert_allclose(C.sum(axis=(0, 1)), P.grad, atol=1e-12, err_msg=name)
        if name.startswith("cell"):
            assert not np.any(C[:-1])  # many-to-one: only the loss at step T
    assert state_jacobian(rec, 6, 2).shape == ((6, 6) if cell == "lstm" else (3, 3))

    tagger = nn.SequenceTagger(5, 3, 3, 4, cell=cell, seed=2, dtype=np.float64)
    ids, tags = rng.integers(0, 5, (5, 2)), rng.integers(0, 4, (5, 2))
    loss, _ = tagger.loss(ids, tags)
    loss.backward()
    rec = record(tagger, ids, tags)
    for name, P in tagger.named_parameters():
        if name.startswith("embed"):
            with pytest.raises(ValueError, match="enters neither"):
                contributions(rec, P)
            continue
        np.testing.assert_allclose(contributions(rec, P).sum(axis=(0, 1)), P.grad, atol=1e-12, err_msg=name)

    s2s = nn.Seq2Seq(6, 3, 3, bos=0, cell=cell, seed=3, dtype=np.float64)
    src, tgt = rng.integers(1, 6, (4, 2)), rng.integers(1, 6, (3, 2))
    loss, _, _ = s2s.loss(src, tgt)
    loss.backward()
    rec = record(s2s, src, tgt)
    P = s2s.encoder.cell.W if cell == "rnn" else s2s.encoder.cell.weight_hh
    np.testing.assert_allclose(contributions(rec, P).sum(axis=(0, 1)), P.grad, atol=1e-12)
    assert rec.T == 4


def test_bad_input_names_the_function_and_the_problem():
    model, xs, targets = network("lstm")
    _, out = model.loss(xs, targets)
    with pytest.raises(IndexError, match=r"state_jacobian: .*batch in \[0, 2\), got batch = 5"):
        state_jacobian(out, 3, 1, batch=5)
    with pytest.raises(ValueError, match="contributions: P must be one of the model's parameters"):
        contributions(out, nn.RNN(4, 3, 4).W)
    with pytest.raises(ValueError, match="gradient_flow: ends must be steps in 1 … T = 5"):
        gradient_flow(out, ends=[9])
    with pytest.raises(TypeError, match="expected the RNNOutput of an nn.RNN"):
        state_jacobian(object(), 1, 0)
    with pytest.raises(ValueError, match="no targets"):
        contributions(model.forward(xs), model.V)


def test_long_sequences_measure_the_last_row_and_agree_with_the_chained_products():
    rng = np.random.default_rng(7)
    model = nn.RNN(4, 4, 4, cell="lstm", seed=7, dtype=np.float64)
    T = 260
    _, out = model.loss(np.eye(4)[rng.integers(0, 4, T)], rng.integers(0, 4, T))
    flow = gradient_flow(out)  # T > 200: only the row t = T, every gap once
    np.testing.assert_array_equal(flow.ends, [T])
    assert np.isnan(flow.norms[T - 1, 1]) and len(flow.gaps) == T - 1
    D = step_jacobians(out)
    J = np.eye(8)
    for k in range(T, T - 40, -1):  # ∂s_T/∂s_{k−1} = ∂s_T/∂s_k · D_k, by hand
        J = J @ D[k - 1]
    assert flow.norms[T, T - 40] == pytest.approx(np.linalg.norm(J, 2), rel=1e-9)
    assert flow.jacobian_norms[39] == pytest.approx(np.linalg.norm(J, 2), rel=1e-9)
    carousel = gradient_flow(out, part="carousel")
    assert carousel.part == "carousel" and np.all(carousel.jacobian_norms <= 1 + 1e-12)  # Π diag(f), 0 < f < 1


class OneStepDifferent:
    """Stands in for an architecture's cell: call `k` (step k) runs `other` instead (a copy of the cell with
    one weight nudged: the model's own loss then depends on P(k) alone), or nudges the state it is given
    (s_{k−1}); every new state is kept, so s_t can be read back."""

    def __init__(self, cell, k, other=None, nudge=None):
        self.cell, self.k, self.other, self.nudge, self.calls, self.states = cell, k, other, nudge, 0, []

    def __call__(self, x, state):
        self.calls += 1
        if self.calls == self.k and self.nudge is not None:
            state = self.nudge(state)
        state = (self.other if self.calls == self.k and self.other is not None else self.cell)(x, state)
        self.states.append(state)
        return state

    def __getattr__(self, name):  # hidden_size, … of the real cell
        return getattr(self.cell, name)


def _architectures(cell):
    rng = np.random.default_rng(4)
    clf = nn.SequenceClassifier(2, 3, 3, cell=cell, seed=1, dtype=np.float64)
    tagger = nn.SequenceTagger(5, 3, 3, 4, cell=cell, seed=2, dtype=np.float64)
    s2s = nn.Seq2Seq(6, 3, 3, bos=0, cell=cell, seed=3, dtype=np.float64)
    for model in (clf, tagger, s2s):
        for p in model.parameters():
            p.data = p.data * 2
    return [(clf, "cell", rng.random((6, 2, 2)), rng.integers(0, 3, 2)),
            (tagger, "cell", rng.integers(0, 5, (5, 2)), rng.integers(0, 4, (5, 2))),
            (s2s, "encoder.cell", rng.integers(1, 6, (4, 2)), rng.integers(1, 6, (3, 2)))]


def _owner_and_cell(model, path):
    owner = model.encoder if path == "encoder.cell" else model
    return owner, owner.cell


@pytest.mark.parametrize("cell", CELLS)
def test_architectures_per_step_gradients_and_state_jacobians_match_finite_differences(cell):
    # the taggers, the classifier and the Seq2Seq encoder: ∂L/∂P(k) (P used at step k only) and ∂s_t/∂s_k by
    # central differences of each model's own loss and cell, through a stand-in cell that changes step k alone
    weight = "W" if cell == "rnn" else "weight_hh"
    for model, path, inputs, targets in _architectures(cell):
        rec = record(model, inputs, targets)
        owner, real = _owner_and_cell(model, path)
        name = f"{path}.{weight}"
        columns = contributions(rec, name).sum(axis=0)  # (T, *P.shape): ∂L/∂P(k)
        T = rec.T
        entries = [(0, 1), (2, 0), (1, 2)]
        for k in (1, 3, T):
            for index in entries:
                values = []
                for sign in (1, -1):
                    other = copy.deepcopy(real)
                    getattr(other, weight).data[index] += sign * EPS
                    owner.cell = OneStepDifferent(real, k, other=other)
                    values.append(model.loss(inputs, targets)[0].item())
                owner.cell = real
                assert columns[k - 1][index] == pytest.approx((values[0] - values[1]) / (2 * EPS), abs=1e-8), \
                    (type(model).__name__, k, index)
        t, k, w = T, 2, rec.width
        J = state_jacobian(rec, t, k, batch=1)
        numeric = np.zeros((w, w))
        for r in range(w):
            ends = []
            for sign in (1, -1):
                def nudge(state, sign=sign):
                    flat = rec.pack(state).data.copy()
                    flat[1, r] += sign * EPS
                    return rec.unpack(Tensor(flat))
                owner.cell = OneStepDifferent(real, k + 1, nudge=nudge)
                model.loss(inputs, targets)
                ends.append(rec.pack(owner.cell.states[t - 1]).data[1])
            owner.cell = real
            numeric[:, r] = (ends[0] - ends[1]) / (2 * EPS)
        np.testing.assert_allclose(J, numeric, atol=1e-8, err_msg=type(model).__name__)
