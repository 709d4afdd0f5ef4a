"""Issue 13's remaining torch idioms: split with torch's meaning, tensor exponents in **, relu in nn.RNN,
cross-entropy over (T, B, k) logits, one_hot's int64, bool() of a one-element tensor, pad's other modes —
values, gradients and dtypes against torch and float64 finite differences."""
import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, gradcheck, nn, split

torch = pytest.importorskip("torch")


def _torch_grads(fn, arrays):
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    out.backward(torch.ones_like(out))
    return out.detach().numpy(), [x.grad.numpy() for x in leaves]


def _our_grads(fn, arrays):
    leaves = [Parameter(np.array(a)) for a in arrays]
    out = fn(*leaves)
    out.backward(np.ones(out.shape, out.dtype))
    return out.data, [x.grad for x in leaves]


def _same_as_torch(ours, theirs, arrays, rtol=1e-10):
    value, grads = _our_grads(ours, arrays)
    t_value, t_grads = _torch_grads(theirs, arrays)
    np.testing.assert_allclose(value, t_value, rtol=rtol)
    assert value.dtype == t_value.dtype
    for g, tg in zip(grads, t_grads):
        np.testing.assert_allclose(g, tg, rtol=rtol, atol=1e-12)


# --- split: torch's meaning --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(2,), (3, 1), ([1, 3], 1), ([2, 1, 1],), (5, -1)])
def test_function_split_has_torch_meaning(args):
    x = np.random.default_rng(0).standard_normal((4, 4))
    ours = split(Tensor(x), *args)
    theirs = torch.split(torch.from_numpy(x), *args)
    assert [p.shape for p in ours] == [tuple(p.shape) for p in theirs]
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.data, q.numpy())
    weights = [np.full(p.shape, i + 1.0) for i, p in enumerate(ours)]
    assert gradcheck(lambda a: sum(((q * w).sum() for q, w in zip(split(a, *args), weights)), Tensor(0.0)),
                     [Parameter(x)])


def test_split_sizes_that_do_not_add_up_are_refused():
    with pytest.raises(Exception, match=r"split.*sizes \[2, 1\] must .* add up to 4"):
        split(Tensor(np.zeros((4, 2))), [2, 1])


# --- tensor exponents --------------------------------------------------------------------------------

def test_tensor_exponent_and_number_base_match_torch():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.5, 2.0, (3, 4)), rng.standard_normal((4,))
    _same_as_torch(lambda x, y: x ** y, lambda x, y: x ** y, [a, b])  # broadcast exponent
    _same_as_torch(lambda y: 2.5 ** y, lambda y: 2.5 ** y, [b])
    _same_as_torch(lambda x: x ** 3, lambda x: x ** 3, [a])
    assert gradcheck(lambda x, y: x ** y, [Parameter(a), Parameter(b)])
    assert gradcheck(lambda y: 3 ** y, [Parameter(b)])


def test_tensor_exponent_dtypes_follow_torch():
    f32 = Tensor(np.array([1.5, 2.0], np.float32))
    ints = Tensor(np.array([2, 3]))
    for ours, theirs in [(f32 ** ints, torch.tensor([1.5, 2.0]) ** torch.tensor([2, 3])),
                         (ints ** ints, torch.tensor([2, 3]) ** torch.tensor([2, 3])),
                         (2 ** f32, 2 ** torch.tensor([1.5, 2.0])),
                         (f32 ** Tensor(np.float64(2.0)),
                          torch.tensor([1.5, 2.0]) ** torch.tensor(2.0, dtype=torch.float64))]:
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)


# --- relu as the nonlinearity of nn.RNN --------------------------------------------------------------

def test_rnn_with_relu_matches_torch_nn_rnn():
    model = nn.RNN(3, 5, 4, nonlinearity="relu", seed=2, dtype=np.float64)
    assert model.nonlinearity == "relu" and model.cell.nonlinearity == "relu" and "relu" in repr(model)
    rng = np.random.default_rng(3)
    xs, targets = rng.standard_normal((6, 2, 3)), rng.integers(0, 4, (6, 2))
    L, out = model.loss(xs, targets)
    L.backward()
    assert all(s.op == "relu" for s in out.states[1:])
    twin = model.to_torch()
    assert twin.rnn.nonlinearity == "relu"
    logits, _ = twin(torch.from_numpy(xs))
    theirs = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.from_numpy(targets).reshape(-1),
                                               reduction="sum")
    theirs.backward()
    assert L.item() == pytest.approx(theirs.item(), rel=1e-12)
    np.testing.assert_allclose(model.W.grad, twin.rnn.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.U.grad, twin.rnn.weight_ih_l0.grad.numpy().T, rtol=1e-10, atol=1e-12)
    back = nn.RNN(3, 5, 4, nonlinearity="relu", dtype=np.float64).load_torch(twin)
    np.testing.assert_array_equal(back.W.data, model.W.data)
    with pytest.raises(ValueError, match="relu"):
        nn.RNN(3, 5, 4, nonlinearity="tanh").load_torch(twin)


def test_relu_rnn_gradients_match_finite_differences():
    model = nn.RNN(2, 3, 2, nonlinearity="relu", seed=4, dtype=np.float64)
    xs, targets = np.random.default_rng(5).standard_normal((4, 2)), [0, 1, 1, 0]
    assert gradcheck(lambda *_: model.loss(xs, targets)[0], [p for _, p in model.named_parameters()])


def test_the_one_nonlinearity_table_serves_both_cell_and_model():
    from tinygrad_rnn.nn import cells
    assert set(cells.NONLINEARITIES) == {"tanh", "sigmoid", "logistic", "relu"}
    assert not hasattr(cells, "CELL_NONLINEARITIES")
    with pytest.raises(ValueError, match=r"nonlinearity must be one of .*relu"):
        nn.RNN(2, 3, 2, nonlinearity="softsign")
    with pytest.raises(ValueError, match=r"nonlinearity must be one of .*relu"):
        nn.RNNCell(2, 3, nonlinearity="softsign")


# --- cross-entropy over (T, B, k) --------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sequence_cross_entropy_is_torch_with_classes_moved_to_axis_one(reduction):
    rng = np.random.default_rng(6)
    z, t = rng.standard_normal((5, 3, 4)), rng.integers(0, 4, (5, 3))
    t[4, 1] = -100  # ignored (a padded step)
    target = torch.from_numpy(t)

    def theirs(logits):  # torch's layout: (B, k, T) with targets (B, T)
        out = torch.nn.functional.cross_entropy(logits.permute(1, 2, 0), target.T, reduction=reduction,
                                                label_smoothing=0.1)
        return out.T if reduction == "none" else out
    _same_as_torch(lambda x: F.sequence_cross_entropy(x, t, reduction, label_smoothing=0.1), theirs, [z])
    steps = [Tensor(z[i]) for i in range(5)]  # the list of per-step logits an RNN loop collects
    np.testing.assert_allclose(F.sequence_cross_entropy(steps, t, reduction).data,
                               F.sequence_cross_entropy(Tensor(z), t, reduction).data, rtol=1e-12)


def test_sequence_cross_entropy_refuses_torch_layout_targets():
    with pytest.raises(Exception, match=r"sequence_cross_entropy.*targets \(T, B\)"):
        F.sequence_cross_entropy(Tensor(np.zeros((5, 3, 4))), np.zeros((5, 4), np.int64))


# --- one_hot, bool -------------------------------------------------------------------------------------

def test_one_hot_is_int64_as_torch_and_infers_the_class_count():
    ours = F.one_hot(np.array([2, 0, 1]))
    theirs = torch.nn.functional.one_hot(torch.tensor([2, 0, 1]))
    assert ours.dtype == np.int64 and str(theirs.dtype) == "torch.int64"
    np.testing.assert_array_equal(ours.data, theirs.numpy())
    z = Tensor(np.zeros((3, 3), np.float32))
    assert (z * F.one_hot(np.array([2, 0, 1]), 3)).dtype == np.float32  # it promotes to the float side


def test_bool_of_a_one_element_tensor_as_torch():
    assert bool(Tensor(2.0)) and not bool(Tensor([0.0])) and bool(Tensor([[1]]))
    loss = Tensor(0.5)
    assert (loss < 1) and not (loss > 1)  # `if loss < 1:` reads as in torch
    with pytest.raises(TypeError, match="2 elements is ambiguous"):
        bool(Tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="ambiguous"):
        bool(Tensor(np.zeros(0)))  # torch: also refused (no element)


# --- pad modes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape, widths", [((2, 3, 4), (2, 1)), ((1, 2, 3, 4), (1, 2, 2, 0))])
def test_pad_modes_match_torch(mode, shape, widths):
    x = np.random.default_rng(7).standard_normal(shape)  # torch: (C, W)/(N, C, W), (N, C, H, W) in these modes
    rng = np.random.default_rng(8)
    weights = rng.standard_normal(torch.nn.functional.pad(torch.from_numpy(x), widths, mode=mode).shape)
    _same_as_torch(lambda a: F.pad(a, widths, mode=mode) * Tensor(weights),
                   lambda a: torch.nn.functional.pad(a, widths, mode=mode) * torch.from_numpy(weights), [x])
    assert gradcheck(lambda a: F.pad(a, widths, mode=mode), [Parameter(x)])
    assert F.pad(Tensor(x.astype(np.float32)), widths, mode=mode).dtype == np.float32


def test_pad_bad_modes_and_sizes_are_refused():
    with pytest.raises(ValueError, match="pad: mode"):
        F.pad(Tensor(np.zeros((2, 3))), (1, 1), mode="mirror")
    with pytest.raises(Exception, match=r"pad.*reflect padding \(3, 0\) must be smaller than the axis \(3\)"):
        F.pad(Tensor(np.zeros((2, 3))), (3, 0), mode="reflect")
