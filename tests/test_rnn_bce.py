"""nn.RNN.loss(..., loss="bce"): lecture 23's L = Σ_t L⁽ᵗ⁾ with L⁽ᵗ⁾ = −y log ŷ − (1 − y) log(1 − ŷ), ŷ = σ(logits),
checked against the formula, torch and finite differences, its nodes inside their steps, and the analysis'
contributions on it."""

import numpy as np
import pytest

from tinygrad_rnn import Tensor, analysis, gradcheck, nn

CELLS = ["rnn", "gru", "lstm"]


def _data(seed=0, T=5, B=3, n=3, k=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, B, n)), rng.uniform(size=(T, B, k))


def _formula(logits, y):
    """The notes' per-step BCE on ŷ = sigmoid(logits), summed over the batch and the outputs: L⁽¹⁾ … L⁽ᵀ⁾."""
    p = 1 / (1 + np.exp(-logits))
    return (-(y * np.log(p) + (1 - y) * np.log(1 - p))).reshape(len(logits), -1).sum(axis=1)


@pytest.mark.parametrize("cell", CELLS)
def test_bce_loss_is_the_lectures_sum_of_per_step_losses(cell):
    model = nn.RNN(3, 4, 2, cell=cell, seed=1, dtype=np.float64)
    xs, y = _data()
    L, out = model.loss(xs, y, loss="bce")
    logits = np.stack([z.data for z in out.logits])
    expected = _formula(logits, y)
    np.testing.assert_allclose([L_t.item() for L_t in out.losses], expected, rtol=1e-12)
    assert L.item() == pytest.approx(expected.sum(), rel=1e-12)
    assert out.loss_kind == "bce"


@pytest.mark.parametrize("cell", CELLS)
def test_bce_nodes_sit_inside_their_step_boxes(cell):
    model = nn.RNN(3, 4, 2, cell=cell, seed=2, dtype=np.float64)
    xs, y = _data()
    L, out = model.loss(xs, y, loss="bce")
    assert [L_t.step for L_t in out.losses] == [1, 2, 3, 4, 5]
    assert [L_t.name for L_t in out.losses] == [f"L({t})" for t in range(1, 6)]
    assert [z.step for z in out.logits] == [1, 2, 3, 4, 5]
    for t, L_t in enumerate(out.losses, start=1):
        assert L_t.op == "binary_cross_entropy_with_logits" and L_t.parents[0] is out.logits[t - 1]
        assert {p.name for p in out.logits[t - 1].parents} >= {f"V({t})", f"c({t})", f"s({t})"}
    L.backward()
    assert len(out.tape.copies(model.V)) == 5
    np.testing.assert_allclose(out.tape.step_grads(model.V).sum(axis=0), model.V.grad, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_bce_gradients_match_finite_differences(cell):
    model = nn.RNN(2, 3, 2, cell=cell, seed=3, dtype=np.float64)
    xs, y = _data(T=4, B=2, n=2)
    assert gradcheck(lambda *_: model.loss(xs, y, loss="bce")[0], [p for _, p in model.named_parameters()])


@pytest.mark.parametrize("cell", CELLS)
def test_bce_matches_torch(cell):
    torch = pytest.importorskip("torch")
    model = nn.RNN(3, 4, 2, cell=cell, seed=4, dtype=np.float64)
    xs, y = _data(seed=5)
    L, _ = model.loss(xs, y, loss="bce")
    L.backward()
    twin = model.to_torch()
    logits, _ = twin(torch.from_numpy(xs))
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y), reduction="sum")
    theirs.backward()
    assert L.item() == pytest.approx(theirs.item(), rel=1e-12)
    np.testing.assert_allclose(model.V.grad, twin.out.weight.grad.numpy().T, rtol=1e-10)
    ours = model.W.grad if cell == "rnn" else model.cell.weight_hh.grad
    np.testing.assert_allclose(ours, twin.rnn.weight_hh_l0.grad.numpy().T, rtol=1e-10)


def test_bce_float32_dtype_and_saturated_logits_stay_finite():
    model = nn.RNN(3, 4, 2, seed=6)
    xs, y = _data()
    model.V.data *= 1e4  # logits of ±1e4: σ saturates, the stable form does not
    L, out = model.loss(xs.astype(np.float32), (y > 0.5).astype(np.float32), loss="bce")
    L.backward()
    assert L.dtype == np.float32 and out.losses[0].dtype == np.float32 and np.isfinite(L.item())
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("bad, match", [("shape", r"targets must have shape \(5, 3, 2\)"),
                                        ("range", r"targets in \[0, 1\]"), ("kind", "loss must be")])
def test_bce_bad_targets_are_refused_clearly(bad, match):
    model = nn.RNN(3, 4, 2, seed=0)
    xs, y = _data()
    kwargs = {"loss": "bce"}
    if bad == "shape":
        y = y[..., 0]
    elif bad == "range":
        y = y * 3
    else:
        kwargs = {"loss": "mse"}
    with pytest.raises(ValueError, match="RNN.loss: .*" + match):
        model.loss(xs, y, **kwargs)


@pytest.mark.parametrize("cell", CELLS)
def test_contributions_work_with_the_bce_loss(cell):
    model = nn.RNN(3, 4, 2, cell=cell, seed=7, dtype=np.float64)
    W = model.W if cell == "rnn" else model.cell.weight_hh
    xs, y = _data(seed=8)
    L, out = model.loss(xs, y, loss="bce")
    L.backward()
    C = analysis.contributions(out, W)  # the analysis recomputes the output's own (bce) loss
    np.testing.assert_allclose(C.sum(axis=0), out.tape.step_grads(W), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(C.sum(axis=(0, 1)), W.grad, rtol=1e-9, atol=1e-13)
    # row t is ∂L_t/∂W: the gradient of step t's loss alone
    for t in (1, 3, 5):
        model.zero_grad()
        _, again = model.loss(xs, y, loss="bce")
        again.losses[t - 1].backward()
        np.testing.assert_allclose(C[t - 1].sum(axis=0), W.grad, rtol=1e-9, atol=1e-13)


def test_summed_loss_recomputes_the_recorded_loss_with_lengths():
    model = nn.RNN(3, 4, 2, seed=9, dtype=np.float64)
    xs, y = _data(seed=10, B=4)
    for kind, targets in (("bce", y), ("cross_entropy", (y[..., 0] > 0.5).astype(np.int64))):
        L, out = model.loss(xs, targets, lengths=[5, 2, 4, 1], loss=kind)
        stacked = np.stack([z.data for z in out.logits]).reshape(-1, 2)
        assert out.summed_loss(Tensor(stacked)).item() == pytest.approx(L.item(), rel=1e-12)
