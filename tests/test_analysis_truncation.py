"""Truncated BPTT: exact zeros beyond the window, k = T is full BPTT, and a gradcheck that knows it."""
import numpy as np
import pytest

from tinygrad_rnn import GradcheckError, nn
from tinygrad_rnn.analysis import (clip_grad_norm, contributions, truncated_bptt, truncated_contributions,
                                   truncated_gradcheck, truncation_bias)
from tinygrad_rnn.optim import clip_grad_norm as optim_clip_grad_norm


def network(T=7, B=2, seed=3):
    rng = np.random.default_rng(seed)
    model = nn.RNN(4, 3, 4, seed=seed, dtype=np.float64)
    model.W.data = model.W.data * 3  # strong recurrence: truncation visibly changes the gradient
    xs = np.eye(4)[rng.integers(0, 4, size=(T, B))]
    targets = rng.integers(0, 4, size=(T, B))
    return model, xs, targets


def grads_of(model):
    return [p.grad.copy() for p in model.parameters()]


def test_contributions_beyond_the_window_are_exactly_zero():
    model, xs, targets = network()
    _, out = model.loss(xs, targets)
    full = contributions(out, model.W)
    for k in (1, 2, 3, 7):
        C = truncated_contributions(out, model.W, k)
        T = out.T
        t, j = np.meshgrid(np.arange(1, T + 1), np.arange(1, T + 1), indexing="ij")
        same_segment = (t - 1) // k == (j - 1) // k
        assert not np.any(C[t - j >= k])                     # farther than k steps back: exactly 0.0
        assert not np.any(C[~same_segment])                  # nor across a segment boundary
        np.testing.assert_allclose(C[same_segment & (j <= t)], full[same_segment & (j <= t)], atol=1e-13)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_truncated_bptt_gradient_is_the_sum_of_the_truncated_contributions(k):
    model, xs, targets = network()
    model.zero_grad()
    losses = truncated_bptt(model, xs, targets, k)
    assert len(losses) == -(-len(xs) // k)
    L, out = model.loss(xs, targets)
    assert sum(losses) == pytest.approx(L.item())  # the forward values are those of the full sequence
    for P in model.parameters():
        np.testing.assert_allclose(truncated_contributions(out, P, k).sum(axis=(0, 1)), P.grad, atol=1e-12)


def test_k_equal_to_T_is_full_bptt_and_smaller_k_is_not():
    model, xs, targets = network()
    L, _ = model.loss(xs, targets)
    L.backward()
    full = grads_of(model)
    model.zero_grad()
    assert truncated_bptt(model, xs, targets, len(xs)) == [pytest.approx(L.item())]
    for g, p in zip(full, model.parameters()):
        np.testing.assert_allclose(p.grad, g, atol=1e-13)
    model.zero_grad()
    truncated_bptt(model, xs, targets, 2)
    assert np.abs(model.W.grad - full[1]).max() > 1e-3  # truncation really changes ∂L/∂W


def test_truncated_bptt_with_an_optimizer_steps_once_per_segment():
    model, xs, targets = network()

    class SGD:  # a stand-in with the optimizer interface
        def __init__(self, params, lr):
            self.params, self.lr, self.steps = params, lr, 0

        def zero_grad(self):
            for p in self.params:
                p.grad = None

        def step(self):
            self.steps += 1
            for p in self.params:
                p.data = p.data - self.lr * p.grad

    opt = SGD(model.parameters(), 0.1)
    before = model.W.data.copy()
    losses = truncated_bptt(model, xs, targets, 3, opt)
    assert opt.steps == 3 and len(losses) == 3
    assert not np.allclose(model.W.data, before)
    later = [truncated_bptt(model, xs, targets, 3, opt) for _ in range(30)][-1]
    assert sum(later) < sum(losses)  # it trains


def test_truncated_gradcheck_passes_where_the_ordinary_one_would_not():
    model, xs, targets = network(T=6, B=1)
    model.W.grad = np.ones((3, 3))
    W32 = model.W.data.copy()
    assert truncated_gradcheck(model, xs, targets, 2)
    assert truncated_gradcheck(model, xs, targets, 6)
    np.testing.assert_array_equal(model.W.grad, np.ones((3, 3)))  # restored
    np.testing.assert_array_equal(model.W.data, W32)


def test_truncated_gradcheck_catches_a_wrong_gradient(monkeypatch):
    import tinygrad_rnn.analysis.truncation as truncation
    model, xs, targets = network(T=6, B=1)
    real = truncation.tbptt
    # a "truncated BPTT" that forgets to detach (i.e. full BPTT) is not the surrogate's gradient
    monkeypatch.setattr(truncation, "tbptt", lambda m, x, y, k1, k2, s0=None: real(m, x, y, len(x), len(x), s0=s0))
    with pytest.raises(GradcheckError, match=r"truncated_gradcheck \(k = 2\)"):
        truncated_gradcheck(model, xs, targets, 2)


def test_truncation_bias_report():
    model, xs, targets = network()
    L, out = model.loss(xs, targets)
    L.backward()
    full_grad = model.W.grad.copy()
    report = truncation_bias(out, 3)
    np.testing.assert_allclose(report.full.sum(axis=0), full_grad, atol=1e-12)
    np.testing.assert_allclose(report.full - report.truncated, report.bias)
    assert report.bias_norms[0] == pytest.approx(np.linalg.norm(report.bias[0]))
    assert 0 < report.relative and -1 <= report.cosine <= 1
    assert "k = 3" in report.report() and len(report.report().splitlines()) == out.T + 3
    none = truncation_bias(out, out.T)
    assert not np.any(none.bias) and none.relative == 0 and none.cosine == pytest.approx(1)
    np.testing.assert_array_equal(model.W.grad, full_grad)


def test_bad_k_and_clip_grad_norm_reexport():
    model, xs, targets = network()
    with pytest.raises(ValueError, match=r"truncated_bptt: k \(steps per segment\) must be a positive integer"):
        truncated_bptt(model, xs, targets, 0)
    assert clip_grad_norm is optim_clip_grad_norm


@pytest.mark.parametrize("k", [2, 3])
def test_truncated_bptt_matches_pytorch_with_detached_states(k):
    torch = pytest.importorskip("torch")
    model, xs, targets = network()
    module = model.to_torch()
    h = None
    for start in range(0, len(xs), k):
        logits, h = module(torch.from_numpy(xs[start:start + k]), h)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.from_numpy(targets[start:start + k])
                                                 .reshape(-1), reduction="sum")
        loss.backward()
        h = h.detach()  # PyTorch's truncated BPTT
    model.zero_grad()
    truncated_bptt(model, xs, targets, k)
    np.testing.assert_allclose(model.W.grad, module.rnn.weight_hh_l0.grad.numpy().T, atol=1e-12)
    np.testing.assert_allclose(model.U.grad, module.rnn.weight_ih_l0.grad.numpy().T, atol=1e-12)
    np.testing.assert_allclose(model.b.grad, module.rnn.bias_ih_l0.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(model.V.grad, module.out.weight.grad.numpy().T, atol=1e-12)


def test_truncated_bptt_trains_with_the_projects_sgd():
    optim = pytest.importorskip("tinygrad_rnn.optim")
    if not hasattr(optim, "SGD"):
        pytest.skip("optim.SGD not built yet")
    model, xs, targets = network()
    opt = optim.SGD(model.parameters(), lr=0.05)
    first = sum(truncated_bptt(model, xs, targets, 3, opt))
    for _ in range(20):
        last = sum(truncated_bptt(model, xs, targets, 3, opt))
    assert last < first
