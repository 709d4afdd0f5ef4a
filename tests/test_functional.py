"""Losses and helpers in tinygrad_rnn.functional: values against numpy formulas, gradients against
finite differences (engine gradcheck and this suite's own helper), and their input errors."""
import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, gradcheck


def _ce_reference(z, t):
    z = np.atleast_2d(z)
    t = np.atleast_1d(t)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -logp[np.arange(len(t)), t]


def _check_grads(fn, arrays, numerical_grad, engine_grads):
    assert gradcheck(fn, [Parameter(a.copy()) for a in arrays])
    for a, n in zip(engine_grads(fn, arrays), numerical_grad(fn, arrays)):
        np.testing.assert_allclose(a, n, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (1, 3), (4,)], ids=str)
def test_cross_entropy(shape, reduction, numerical_grad, engine_grads):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(shape) * 2
    t = rng.integers(0, shape[-1], size=shape[:-1])
    out = F.cross_entropy(Tensor(z), t, reduction=reduction)
    losses = _ce_reference(z, t)
    if len(shape) == 1:
        losses = losses[0]
    ref = {"mean": np.mean(losses), "sum": np.sum(losses), "none": losses}[reduction]
    assert out.shape == np.shape(ref)
    np.testing.assert_allclose(out.data, ref, rtol=1e-12)
    _check_grads(lambda a: F.cross_entropy(a, t, reduction=reduction), [z], numerical_grad, engine_grads)
    assert F.cross_entropy(Tensor(z.astype(np.float32)), t, reduction=reduction).dtype == np.float32


def test_cross_entropy_default_is_mean():
    z = np.random.default_rng(1).standard_normal((3, 5))
    t = np.array([4, 0, 1])
    np.testing.assert_allclose(F.cross_entropy(Tensor(z), t).item(), _ce_reference(z, t).mean(), rtol=1e-12)


def test_cross_entropy_is_stable_for_large_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]])
    p = Parameter(z.copy())
    loss = F.cross_entropy(p, np.array([1, 2]), reduction="sum")
    loss.backward()
    np.testing.assert_allclose(loss.item(), 1e4 + np.log(3), rtol=1e-12)
    np.testing.assert_allclose(p.grad, [[1, -1, 0], [1 / 3, 1 / 3, -2 / 3]], atol=1e-12)


def test_cross_entropy_accepts_tensor_and_numpy_integer_targets():
    z = np.random.default_rng(2).standard_normal((2, 3))
    a = F.cross_entropy(Tensor(z), Tensor(np.array([0, 2])), reduction="sum").item()
    b = F.cross_entropy(Tensor(z), np.array([0, 2], dtype=np.int32), reduction="sum").item()
    c = F.cross_entropy(Tensor(z[0]), np.int64(0)).item() + F.cross_entropy(Tensor(z[1]), 2).item()
    np.testing.assert_allclose([a, b], [c, c], rtol=1e-12)


def test_cross_entropy_errors():
    z = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"cross_entropy.*reduction"):
        F.cross_entropy(z, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy.*\(3,\)"):
        F.cross_entropy(z, [0, 1])
    with pytest.raises(ValueError, match=r"cross_entropy.*\[0, 4\)"):
        F.cross_entropy(z, [0, 1, 4])
    with pytest.raises(TypeError, match="cross_entropy.*integer"):
        F.cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cross_entropy.*\(2, 3, 4\)"):
        F.cross_entropy(Tensor(np.zeros((2, 3, 4))), np.zeros((2, 3), int))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True])
def test_binary_cross_entropy(reduction, soft, numerical_grad, engine_grads):
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.9, size=(3, 4))
    t = rng.uniform(0, 1, size=(3, 4)) if soft else rng.integers(0, 2, size=(3, 4)).astype(float)
    losses = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    ref = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
    np.testing.assert_allclose(F.binary_cross_entropy(Tensor(p), t, reduction=reduction).data, ref, rtol=1e-12)
    _check_grads(lambda a: F.binary_cross_entropy(a, t, reduction=reduction), [p], numerical_grad, engine_grads)


def test_binary_cross_entropy_after_sigmoid(numerical_grad, engine_grads):
    t = np.array([1.0, 0.0, 1.0])
    z = np.array([0.3, -1.2, 2.0])
    _check_grads(lambda a: F.binary_cross_entropy(a.sigmoid(), t), [z], numerical_grad, engine_grads)
    a = Parameter(z.copy())
    F.binary_cross_entropy(a.sigmoid(), t, reduction="sum").backward()
    np.testing.assert_allclose(a.grad, 1 / (1 + np.exp(-z)) - t, rtol=1e-10)  # σ(z) − t


def test_binary_cross_entropy_of_saturated_probabilities_is_finite():
    # float32 sigmoid rounds to exactly 1.0 beyond x ≈ 17: PyTorch clamps log at −100, so a confident correct
    # prediction costs 0, not NaN (0 · log 0), and its gradient is 0
    p = Parameter(np.array([1.0, 0.0, 0.5]))
    loss = F.binary_cross_entropy(p, np.array([1.0, 0.0, 1.0]), reduction="sum")
    loss.backward()
    np.testing.assert_allclose(loss.item(), np.log(2), rtol=1e-12)
    np.testing.assert_allclose(p.grad, [0.0, 0.0, -2.0], rtol=1e-12)
    z = Parameter(np.array([40.0], np.float32))
    saturated = F.binary_cross_entropy(z.sigmoid(), np.array([1.0], np.float32))
    saturated.backward()
    assert saturated.item() == 0.0 and np.isfinite(z.grad).all()


def test_binary_cross_entropy_errors():
    with pytest.raises(ValueError, match="binary_cross_entropy.*shape"):
        F.binary_cross_entropy(Tensor(np.full(3, 0.5)), np.ones(4))
    with pytest.raises(ValueError, match=r"binary_cross_entropy.*\[0, 1\]"):
        F.binary_cross_entropy(Tensor(np.array([0.5, 1.5])), np.ones(2))
    with pytest.raises(ValueError, match="binary_cross_entropy.*reduction"):
        F.binary_cross_entropy(Tensor(np.full(2, 0.5)), np.ones(2), reduction="max")


def test_one_hot():
    oh = F.one_hot(np.array([2, 0, 2]), 4)
    assert isinstance(oh, Tensor) and oh.dtype == np.int64 and not oh.requires_grad  # torch's dtype
    np.testing.assert_array_equal(oh.data, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert F.one_hot(np.array([[1], [0]]), 3).shape == (2, 1, 3)
    assert F.one_hot(1, 2, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(F.one_hot(Tensor(np.array([1])), 2).data, [[0, 1]])
    with pytest.raises(ValueError, match=r"one_hot.*\[0, 3\)"):
        F.one_hot(np.array([3]), 3)
    with pytest.raises(TypeError, match="one_hot.*integers"):
        F.one_hot(np.array([0.0]), 3)


def test_one_hot_in_a_graph(numerical_grad, engine_grads):
    t = np.array([1, 3, 0])
    fn = (lambda a: -(a.log_softmax() * F.one_hot(t, 4)).sum(axis=1))
    z = np.random.default_rng(4).standard_normal((3, 4))
    _check_grads(fn, [z], numerical_grad, engine_grads)
    np.testing.assert_allclose(fn(Tensor(z)).data, _ce_reference(z, t), rtol=1e-12)


def test_functional_aliases_are_the_ops():
    x = Tensor(np.array([-1.0, 0.5]))
    np.testing.assert_array_equal(F.relu(x).data, x.relu().data)
    np.testing.assert_array_equal(F.softmax(x).data, x.softmax().data)
    np.testing.assert_array_equal(F.log_softmax(x).data, x.log_softmax().data)
    np.testing.assert_array_equal(F.tanh(x).data, x.tanh().data)
    np.testing.assert_array_equal(F.sigmoid(x).data, x.sigmoid().data)
