"""Where the API looks like PyTorch it means what PyTorch means (issue 13): each case was silently wrong
or different before, and is checked here against torch itself (values, gradients, dtypes)."""
import numpy as np
import pytest
import torch

from tinygrad_rnn import Parameter, Tensor, nn
from tinygrad_rnn.errors import ShapeError


def torch_grad(fn, x):
    """fn on a torch leaf copy of x; returns (value, ∂Σvalue/∂x) as numpy."""
    t = torch.tensor(x, requires_grad=True)
    out = fn(t)
    out.sum().backward()
    return out.detach().numpy(), t.grad.numpy()


# --- silently wrong before ---------------------------------------------------------------------------

@pytest.mark.parametrize("index", [((0, 0, 3),), ((0, 0, 3), slice(None)), (slice(None), (1, 1)),
                                   ([0, 0, 3],), (np.array([4, 4]), (2, 2))],
                         ids=["tuple-in-tuple", "tuple-rows", "tuple-columns", "list", "array-and-tuple"])
def test_repeated_advanced_indices_accumulate_like_torch(index):
    x = np.arange(20.0).reshape(5, 4)
    p = Parameter(x)
    p[index].sum().backward()  # (the index tuple as Python passes x[(0, 0, 3), :] to __getitem__)
    torch_index = tuple(torch.tensor(i) if isinstance(i, (tuple, list, np.ndarray)) else i for i in index)
    _, expected = torch_grad(lambda t: t[torch_index], x)
    np.testing.assert_array_equal(p.grad, expected)
    assert p.grad.max() == 2  # the repeated entry gets both uses


@pytest.mark.parametrize("fn", ["sigmoid", "tanh", "exp", "log", "softmax", "log_softmax"])
def test_integer_data_computes_in_float32(fn):
    ours = getattr(Tensor([1, 2, 3]), fn)()
    theirs = getattr(torch.tensor([1, 2, 3]).float(), fn)(*([-1] if "softmax" in fn else []))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)


def test_sigmoid_of_ints_is_not_truncated():
    np.testing.assert_allclose(Tensor([1, 2, 3]).sigmoid().data, 1 / (1 + np.exp(-np.array([1, 2, 3]))), rtol=1e-6)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis", [0, -1])
def test_zero_dim_tensors_reduce_over_axis_0_like_torch(reduce, axis):
    p = Parameter(np.array(2.5))
    out = getattr(p, reduce)(axis)
    assert out.shape == () and out.item() == 2.5
    out.backward()
    assert p.grad.shape == () and p.grad == 1.0
    t = torch.tensor(2.5, requires_grad=True)
    r = getattr(t, reduce)(axis)
    (r[0] if isinstance(r, tuple) else r).backward()
    assert t.grad.item() == p.grad


def test_reduction_axis_out_of_range_names_the_op():
    with pytest.raises(ShapeError, match=r"mean: .*axis 1 is out of range for 0 dimensions"):
        Tensor(1.0).mean(1)
    with pytest.raises(ShapeError, match="sum: .*axis 2"):
        Tensor(np.ones((2, 3))).sum(2)


@pytest.mark.parametrize("make", [
    lambda T: T(1) + 0.5,
    lambda T: T(2).exp(),
    lambda T: T(np.ones(3, np.float32)) + T(np.array(2.0)),
    lambda T: T(np.ones(3, np.float32)) * T(np.array([1, 2, 3])),
    lambda T: T(np.ones(3, np.float32)) * T(np.array(3)),
    lambda T: T(np.array([1, 2])) + T(np.array(1.5)),
    lambda T: T(np.array([1, 2])) / T(np.array([2, 2])),
    lambda T: T(np.array([1, 2])) * 2,
    lambda T: T(np.array([1, 2], np.int32)) + 1,
    lambda T: T(np.array([True, False])) + T(np.array(1.5)),
], ids=["int+float", "exp-int", "f32+f64-0d", "f32*int64", "f32*int-0d", "int+f64-0d", "int/int", "int*2",
        "int32+1", "bool+float-0d"])
def test_dtype_promotion_follows_torch(make):
    def ours_tensor(x):
        return Tensor(np.asarray(x))

    def torch_tensor(x):
        return torch.from_numpy(np.asarray(x)) if not isinstance(x, (int, float)) else torch.tensor(x)
    ours, theirs = make(ours_tensor), make(torch_tensor)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)


def test_gradient_of_a_float32_parameter_times_integers_is_float32():
    w = Parameter(np.ones(3, np.float32))
    (w * Tensor(np.array([1, 2, 3]))).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [1, 2, 3])


@pytest.mark.parametrize("make", [lambda x: x[0], lambda x: x.sum() * x.sum(), lambda x: x @ x, lambda x: -x[1],
                                  lambda x: x[0].exp(), lambda x: x[0] ** 2, lambda x: x[2].tanh() + x[1]])
def test_data_is_always_an_ndarray_so_in_place_updates_work(make):
    out = make(Tensor(np.array([1.0, 2.0, 3.0])))
    assert type(out.data) is np.ndarray and out.shape == ()
    out += 1.0  # raised "return arrays must be of ArrayType" on a numpy scalar


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((0,), 0), ((0, 4), -1), ((2, 0), 0)])
def test_softmax_over_an_empty_axis_is_empty(fn, shape, axis):
    x = Parameter(np.zeros(shape, np.float32))
    out = getattr(x, fn)(axis)
    expected = getattr(torch.zeros(shape), fn)(axis)
    assert out.shape == tuple(expected.shape) and out.dtype == np.float32
    out.sum().backward()
    assert x.grad.shape == shape


# --- torch idioms --------------------------------------------------------------------------------------

def test_transpose_swaps_two_axes_and_permute_reorders(numerical_grad, engine_grads):
    x = np.arange(24.0).reshape(2, 3, 4)
    for ours, theirs in [(lambda a: a.transpose(0, 1), lambda t: t.transpose(0, 1)),
                         (lambda a: a.transpose(-1, 0), lambda t: t.transpose(-1, 0)),
                         (lambda a: a.permute(2, 0, 1), lambda t: t.permute(2, 0, 1)),
                         (lambda a: a.permute((1, 2, 0)), lambda t: t.permute((1, 2, 0))),
                         (lambda a: a.mT, lambda t: t.mT)]:
        value, grad = torch_grad(lambda t: theirs(t) * torch.arange(24.0).reshape(theirs(t).shape), x)
        p = Parameter(x)
        out = ours(p)
        np.testing.assert_array_equal(out.data, theirs(torch.tensor(x)).numpy())
        (out * Tensor(np.arange(24.0).reshape(out.shape))).sum().backward()
        np.testing.assert_array_equal(p.grad, grad)
    square = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(Tensor(square).transpose(0, 1).data, square.T)  # was: unchanged
    np.testing.assert_array_equal(Tensor(square).T.data, torch.tensor(square).T.numpy())
    with pytest.raises(ShapeError, match="transpose"):
        Tensor(square).transpose(0, 2)


def test_split_method_has_torch_meaning_and_chunk_makes_n_pieces():
    x = np.arange(14.0).reshape(2, 7)
    for ours, theirs in [(lambda a: a.split(3, 1), lambda t: t.split(3, 1)),
                         (lambda a: a.split([2, 5], dim=1), lambda t: t.split([2, 5], dim=1)),
                         (lambda a: a.split(1), lambda t: t.split(1)),
                         (lambda a: a.chunk(3, 1), lambda t: t.chunk(3, 1)),
                         (lambda a: a.chunk(2, dim=0), lambda t: t.chunk(2, dim=0)),
                         (lambda a: a.chunk(7, -1), lambda t: t.chunk(7, -1))]:
        p = Parameter(x)
        pieces, expected = ours(p), theirs(torch.tensor(x))
        assert [q.shape for q in pieces] == [tuple(e.shape) for e in expected]
        for q, e in zip(pieces, expected):
            np.testing.assert_array_equal(q.data, e.numpy())
        sum((i + 1) * q.sum() for i, q in enumerate(pieces)).backward()
        t = torch.tensor(x, requires_grad=True)
        sum((i + 1) * q.sum() for i, q in enumerate(theirs(t))).backward()
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    with pytest.raises(ShapeError, match="split"):
        Tensor(x).split([2, 2], 1)


def test_gated_cells_keep_their_graphs_with_chunk():
    gru, lstm = nn.GRUCell(3, 4, seed=0), nn.LSTMCell(3, 4, seed=0)
    x = Tensor(np.ones((2, 3), np.float32))
    h = gru(x)
    assert h.shape == (2, 4)
    h2, c2 = lstm(x)
    assert h2.shape == c2.shape == (2, 4)


def test_comparisons_are_elementwise_boolean_tensors_without_grad():
    a, b = Parameter(np.array([1.0, 2.0, 3.0])), Tensor(np.array([3.0, 2.0, 1.0]))
    for ours, theirs in [(a.eq(b), np.array([False, True, False])), (a.ne(b), [True, False, True]),
                         (a == np.array([3.0, 2.0, 1.0]), [False, True, False]), (a != 2.0, [True, False, True]),
                         (a < b, [True, False, False]), (a <= b, [True, True, False]),
                         (a > b, [False, False, True]), (a >= 2, [False, True, True]),
                         (2 < a, [False, False, True]), (np.float64(2.0) == a, [False, True, False])]:
        assert ours.dtype == np.bool_ and not ours.requires_grad and ours.is_leaf
        np.testing.assert_array_equal(ours.data, theirs)
    # between two Tensors too, as torch; `in` on a list then compares elementwise (ambiguous), sets do not
    np.testing.assert_array_equal((a == b).data, [False, True, False])
    np.testing.assert_array_equal((a != b).data, [True, False, True])
    assert (a == b).dtype == np.bool_ and not (a == b).requires_grad
    with pytest.raises(TypeError, match="ambiguous"):
        a in [b]  # noqa: B015  (torch: RuntimeError, the same ambiguity)
    assert len({a, b, a}) == 2 and hash(a) == object.__hash__(a)  # identity hashing, as torch
    assert {a: 1}[a] == 1 and {a: 1, b: 2}[b] == 2  # (hash matches are checked by identity first)
    np.testing.assert_array_equal(a[a > 1.5].data, [2.0, 3.0])  # a boolean mask indexes


def test_python_protocols_like_torch():
    t = Parameter(np.array([[-1.5, 2.0]], np.float32))
    assert float(t[0, 1]) == 2.0 and int(t[0, 0]) == -1 and type(int(t[0, 0])) is int
    assert t.tolist() == [[-1.5, 2.0]] and Tensor(3.0).tolist() == 3.0
    with pytest.raises(TypeError, match="one element"):
        float(t)
    absolute = abs(t)
    np.testing.assert_array_equal(absolute.data, [[1.5, 2.0]])
    clone = t.clone()
    assert clone.data is not t.data and clone.op == "clone"
    (clone * 3 + absolute).sum().backward()
    np.testing.assert_array_equal(t.grad, [[2.0, 4.0]])  # clone passes the gradient (torch: differentiable)
    for name in ("backward", "item", "numpy", "tolist", "clone"):
        assert getattr(Tensor, name).__doc__
    assert Tensor.__doc__


def test_views_like_torch(numerical_grad, engine_grads):
    x = np.arange(6.0).reshape(2, 1, 3)
    cases = [(lambda a: a.view(3, 2), lambda t: t.view(3, 2)), (lambda a: a.view(-1), lambda t: t.view(-1)),
             (lambda a: a.unsqueeze(0), lambda t: t.unsqueeze(0)),
             (lambda a: a.unsqueeze(-1), lambda t: t.unsqueeze(-1)),
             (lambda a: a.squeeze(), lambda t: t.squeeze()), (lambda a: a.squeeze(1), lambda t: t.squeeze(1)),
             (lambda a: a.squeeze(0), lambda t: t.squeeze(0)), (lambda a: a.flatten(), lambda t: t.flatten()),
             (lambda a: a.flatten(1), lambda t: t.flatten(1)),
             (lambda a: a.expand(2, 4, 3), lambda t: t.expand(2, 4, 3)),
             (lambda a: a.expand(5, -1, -1, -1), lambda t: t.expand(5, -1, -1, -1))]
    for ours, theirs in cases:
        value, grad = torch_grad(lambda t: theirs(t) * (1 + torch.arange(theirs(t).numel(), dtype=t.dtype)
                                                      .reshape(theirs(t).shape)), x)
        p = Parameter(x)
        out = ours(p)
        assert out.shape == value.shape
        (out * Tensor(1 + np.arange(out.size, dtype=np.float64).reshape(out.shape))).sum().backward()
        np.testing.assert_array_equal(p.grad, grad)
        np.testing.assert_allclose(numerical_grad(ours, [x])[0], engine_grads(ours, [x])[0], atol=1e-6)


def test_argmax_argmin_return_integer_tensors_without_grad():
    x = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    t = torch.tensor(x)
    for ours, theirs in [(Parameter(x).argmax(), t.argmax()), (Parameter(x).argmax(1), t.argmax(1)),
                         (Parameter(x).argmin(0), t.argmin(0)), (Parameter(x).argmax(1, keepdims=True),
                                                                 t.argmax(1, keepdim=True))]:
        assert ours.dtype == np.int64 and not ours.requires_grad
        np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_factory_functions_return_tensors():
    from tinygrad_rnn import ops
    z = ops.zeros(2, 3)
    assert isinstance(z, Tensor) and z.shape == (2, 3) and z.dtype == np.float32 and not z.requires_grad
    assert ops.ones((4,), requires_grad=True).requires_grad
    assert ops.zeros_like(Tensor(np.ones((2, 2)))).dtype == np.float64
    assert ops.ones_like(Tensor(np.ones(3, np.float32))).data.tolist() == [1, 1, 1]
    assert ops.randn(3, 4, seed=0).shape == (3, 4) and ops.randn(2, seed=0).dtype == np.float32
    np.testing.assert_array_equal(ops.arange(5).data, torch.arange(5).numpy())
    assert ops.arange(5).dtype == np.int64 and ops.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_array_equal(ops.arange(0.0, 1.0, 0.25).data, torch.arange(0.0, 1.0, 0.25).numpy())
    assert ops.full((2,), 7.0).data.tolist() == [7.0, 7.0]
