"""Every op's gradient against central finite differences in float64, twice: through the engine's
`gradcheck` and through this suite's own finite-difference helper (conftest.finite_differences), on
random data, with broadcasting cases (autograd's arg_pairs idea: scalar, (4,), (3,4), (1,4), (3,1)).
"""
import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, concat, gradcheck, stack

# --- inputs -----------------------------------------------------------------------------------------


def make(shape, kind, rng):
    """Random float64 data suited to an op's domain."""
    if kind == "pos":       # log, fractional powers, denominators
        return rng.uniform(0.5, 2.0, size=shape)
    if kind == "away":      # relu / max: keep finite differences away from kinks and ties
        x = rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        return x + np.arange(np.prod(shape, dtype=int)).reshape(shape) * 1e-3 if shape else x
    if kind == "prob":      # probabilities for binary cross-entropy
        return rng.uniform(0.1, 0.9, size=shape)
    return rng.standard_normal(shape)


def check(fn, shapes, kinds, numerical_grad, engine_grads, seed=0, atol=1e-6, rtol=1e-5):
    rng = np.random.default_rng(seed)
    if isinstance(kinds, str):
        kinds = [kinds] * len(shapes)
    arrays = [make(s, k, rng) for s, k in zip(shapes, kinds)]
    # 1. the engine's own gradcheck (float64 central differences)
    params = [Parameter(a.copy()) for a in arrays]
    assert gradcheck(fn, params) is True
    # 2. independently: this suite's finite differences vs backward, with a random output projection
    numeric = numerical_grad(fn, arrays)
    analytic = engine_grads(fn, arrays)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert a.shape == arrays[i].shape, f"input {i}: grad shape {a.shape} != {arrays[i].shape}"
        np.testing.assert_allclose(a, n, atol=atol, rtol=rtol, err_msg=f"input {i}")
    # 3. float32 in, float32 out (the default dtype stays float32 through the op and its gradient)
    params32 = [Parameter(a.astype(np.float32)) for a in arrays]
    out = fn(*params32)
    assert out.dtype == np.float32, f"float32 inputs gave {out.dtype}"
    (out * Tensor(np.ones(out.shape, np.float32))).sum().backward()
    for p in params32:
        assert p.grad is None or p.grad.dtype == np.float32


# --- unary elementwise ---------------------------------------------------------------------------------

UNARY = [
    ("neg", lambda a: -a, "normal"),
    ("exp", lambda a: a.exp(), "normal"),
    ("log", lambda a: a.log(), "pos"),
    ("tanh", lambda a: a.tanh(), "normal"),
    ("sigmoid", lambda a: a.sigmoid(), "normal"),
    ("relu", lambda a: a.relu(), "away"),
    ("pow2", lambda a: a ** 2, "normal"),
    ("pow3", lambda a: a ** 3, "normal"),
    ("pow_half", lambda a: a ** 0.5, "pos"),
    ("pow_minus1", lambda a: a ** -1, "pos"),
    ("pow_1.5", lambda a: a ** 1.5, "pos"),
    ("F.tanh", lambda a: F.tanh(a), "normal"),
    ("F.sigmoid", lambda a: F.sigmoid(a), "normal"),
    ("F.relu", lambda a: F.relu(a), "away"),
]


@pytest.mark.parametrize("shape", [(), (4,), (3, 4), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("name,fn,kind", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, kind, shape, numerical_grad, engine_grads):
    check(fn, [shape], kind, numerical_grad, engine_grads)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(name, axis, numerical_grad, engine_grads):
    fn = (lambda a: getattr(a, name)(axis=axis))
    check(fn, [(3, 4)], "normal", numerical_grad, engine_grads)
    check(lambda a: getattr(a, name)(), [(5,)], "normal", numerical_grad, engine_grads)
    check(lambda a: getattr(F, name)(a, axis), [(2, 3, 4)], "normal", numerical_grad, engine_grads)


def test_softmax_values_and_stability():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    p = Tensor(x).softmax().data
    ls = Tensor(x).log_softmax().data
    ref = np.exp(x - x.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(ls))
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    np.testing.assert_allclose(ls, np.log(ref), rtol=1e-12)
    np.testing.assert_allclose(Tensor(np.array([-800.0, 0.0, 800.0])).sigmoid().data, [0.0, 0.5, 1.0])


# --- reductions ------------------------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 1), (0, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(name, axis, keepdims, numerical_grad, engine_grads):
    shape = (2, 3, 4) if axis == (0, 2) else (3, 4)
    fn = (lambda a: getattr(a, name)(axis=axis, keepdims=keepdims))
    check(fn, [shape], "away", numerical_grad, engine_grads)
    rng = np.random.default_rng(1)
    x = make(shape, "away", rng)
    np.testing.assert_allclose(fn(Tensor(x)).data, getattr(np, name)(x, axis=axis, keepdims=keepdims))


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions_of_vectors_and_scalars(name, numerical_grad, engine_grads):
    check(lambda a: getattr(a, name)(), [(5,)], "away", numerical_grad, engine_grads)
    check(lambda a: getattr(a, name)(), [()], "away", numerical_grad, engine_grads)
    check(lambda a: getattr(a, name)(0), [(5,)], "away", numerical_grad, engine_grads)


def test_max_ties_share_the_gradient():
    a = Parameter(np.array([1.0, 3.0, 3.0, 2.0]))
    a.max().backward()
    np.testing.assert_allclose(a.grad, [0, 0.5, 0.5, 0])  # as torch.amax


def test_mean_value_and_gradient():
    a = Parameter(np.arange(12.0).reshape(3, 4))
    m = a.mean(axis=0)
    np.testing.assert_allclose(m.data, [4, 5, 6, 7])
    m.sum().backward()
    np.testing.assert_allclose(a.grad, np.full((3, 4), 1 / 3))


# --- binary elementwise with broadcasting -----------------------------------------------------------

PAIRS = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((3, 4), (1, 4)),
         ((1, 4), (3, 4)), ((3, 1), (1, 4)), ((), (3, 4)), ((3, 4), ()), ((2, 3, 4), (3, 1)), ((1,), (3, 4))]
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("shapes", PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcasting(name, shapes, numerical_grad, engine_grads):
    kinds = ["normal", "pos"] if name == "div" else ["normal", "normal"]
    check(BINARY[name], list(shapes), kinds, numerical_grad, engine_grads)


def test_same_tensor_on_both_sides(numerical_grad, engine_grads):
    for fn in (lambda a: a * a, lambda a: a + a, lambda a: a - a, lambda a: a / a, lambda a: a @ a):
        check(fn, [(3, 3)], "pos", numerical_grad, engine_grads)


REFLECTED = {  # (expression with a constant c on one side, kind)
    "n+t": lambda t: 2.5 + t, "t+n": lambda t: t + 2.5,
    "n-t": lambda t: 2.5 - t, "t-n": lambda t: t - 2.5,
    "n*t": lambda t: 2.5 * t, "t*n": lambda t: t * 2.5,
    "n/t": lambda t: 2.5 / t, "t/n": lambda t: t / 2.5,
    "a+t": lambda t: np.arange(4.0) + t, "t+a": lambda t: t + np.arange(4.0),
    "a-t": lambda t: np.arange(4.0) - t, "t-a": lambda t: t - np.arange(4.0),
    "a*t": lambda t: np.linspace(-1, 1, 4) * t, "t*a": lambda t: t * np.linspace(-1, 1, 4),
    "a/t": lambda t: np.linspace(1, 2, 4) / t, "t/a": lambda t: t / np.linspace(1, 2, 4),
    "A@t": lambda t: np.ones((2, 3)) @ t, "t@A": lambda t: t @ np.linspace(-1, 1, 8).reshape(4, 2),
    "np.float64*t": lambda t: np.float64(2.5) * t, "t-np.float32": lambda t: t - np.float32(1.5),
}


@pytest.mark.parametrize("name", list(REFLECTED))
def test_reflected_numbers_and_arrays(name, numerical_grad, engine_grads):
    fn = REFLECTED[name]
    out = fn(Tensor(np.ones((3, 4), np.float32)))
    assert isinstance(out, Tensor), f"{name} returned {type(out).__name__}, not a Tensor"
    assert out.dtype == np.float32, f"{name}: float32 tensor with a constant gave {out.dtype}"
    check(fn, [(3, 4)], "pos", numerical_grad, engine_grads)


def test_reflected_values():
    x = np.array([1.0, 2.0, 4.0])
    t = Tensor(x)
    np.testing.assert_allclose((3 - t).data, 3 - x)
    np.testing.assert_allclose((3 / t).data, 3 / x)
    np.testing.assert_allclose((x - t * 2).data, -x)
    np.testing.assert_allclose((np.eye(3) @ t).data, x)


def test_pow_accepts_a_tensor_exponent():  # (once refused; issue 13 asks for torch's meaning)
    out = Tensor([1.0, 2.0]) ** Tensor([2.0, 3.0])
    np.testing.assert_array_equal(out.data, [1.0, 8.0])
    assert out.dtype == np.float32


def test_pow_with_numpy_scalar_exponent_keeps_float32():
    assert (Tensor([1.0, 2.0]) ** np.float64(2.0)).dtype == np.float32


# --- matmul ------------------------------------------------------------------------------------------

MATMUL = [((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((3, 4), (4, 2)), ((1, 4), (4, 1)),
          ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
          ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((3, 4), (2, 4, 2))]


@pytest.mark.parametrize("shapes", MATMUL, ids=str)
def test_matmul(shapes, numerical_grad, engine_grads):
    check(lambda a, b: a @ b, list(shapes), "normal", numerical_grad, engine_grads)
    rng = np.random.default_rng(3)
    x, w = (rng.standard_normal(s) for s in shapes)
    np.testing.assert_allclose((Tensor(x) @ Tensor(w)).data, x @ w)


def test_matmul_in_a_chain(numerical_grad, engine_grads):
    # the weight's gradient may be kept as factors (lazy.py): make sure it composes with other uses
    fn = (lambda x, w: ((x @ w).tanh() @ w.T + w.sum(axis=0)).sum(axis=1))
    check(fn, [(5, 3), (3, 3)], "normal", numerical_grad, engine_grads)
    check(lambda x, w: (x @ w) * (x @ w), [(2, 3), (3, 2)], "normal", numerical_grad, engine_grads)


# --- shape ops ------------------------------------------------------------------------------------------

SHAPE_OPS = [
    ("reshape", lambda a: a.reshape(4, 3), (3, 4)),
    ("reshape_tuple", lambda a: a.reshape((2, 6)), (3, 4)),
    ("reshape_-1", lambda a: a.reshape(-1), (3, 4)),
    ("reshape_up", lambda a: a.reshape(3, 2, 2), (12,)),
    ("T", lambda a: a.T, (3, 4)),
    ("transpose", lambda a: a.transpose(), (3, 4)),
    ("transpose_10", lambda a: a.transpose(1, 0), (3, 4)),
    ("transpose_201", lambda a: a.transpose(2, 0, 1), (2, 3, 4)),
    ("transpose_tuple", lambda a: a.transpose((1, 2, 0)), (2, 3, 4)),
    ("T_3d", lambda a: a.T, (2, 3, 4)),
    ("transpose_negative", lambda a: a.transpose(-1, 0), (3, 4)),
    ("transpose_negative_3d", lambda a: a.transpose(-1, 0, 1), (2, 3, 4)),
    ("transpose_negative_tuple", lambda a: a.transpose((1, -1, 0)), (2, 3, 4)),
    ("getitem_int", lambda a: a[1], (3, 4)),
    ("getitem_negint", lambda a: a[-1], (3, 4)),
    ("getitem_2ints", lambda a: a[1, 2], (3, 4)),
    ("getitem_slice", lambda a: a[1:3], (3, 4)),
    ("getitem_col", lambda a: a[:, 1], (3, 4)),
    ("getitem_steps", lambda a: a[::2, ::-1], (3, 4)),
    ("getitem_newaxis", lambda a: a[None, :, 1:], (3, 4)),
    ("getitem_ellipsis", lambda a: a[..., 0], (2, 3, 4)),
    ("getitem_array", lambda a: a[np.array([0, 2])], (3, 4)),
    ("getitem_repeated", lambda a: a[np.array([0, 2, 0, 0])], (3, 4)),
    ("getitem_list_repeated", lambda a: a[[2, 2, 1]], (3, 4)),
    ("getitem_pairs_repeated", lambda a: a[[0, 0, 1, 2], [1, 1, 3, 1]], (3, 4)),
    ("getitem_mixed_repeated", lambda a: a[:, [3, 0, 3]], (3, 4)),
    ("getitem_tensor_index", lambda a: a[Tensor(np.array([1, 1, 0]))], (3, 4)),
    ("getitem_vector_repeated", lambda a: a[np.array([[0, 1], [1, 1]])], (4,)),
]


@pytest.mark.parametrize("name,fn,shape", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_ops(name, fn, shape, numerical_grad, engine_grads):
    check(fn, [shape], "normal", numerical_grad, engine_grads)
    x = np.random.default_rng(2).standard_normal(shape)
    ref = fn(_NumpyView(x))
    np.testing.assert_array_equal(fn(Tensor(x)).data, ref)


class _NumpyView:
    """Run the same lambda on a plain array: numpy's result is the forward reference."""

    def __init__(self, x):
        self.x = x

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        return self.x[index]

    def reshape(self, *shape):
        return self.x.reshape(*shape)

    def transpose(self, *axes):
        return self.x.transpose(*axes)

    T = property(lambda self: self.x.T)


def test_getitem_repeated_indices_add_up():
    a = Parameter(np.zeros(4))
    (a[[0, 0, 2, 0]] * Tensor(np.array([1.0, 2.0, 3.0, 4.0]))).sum().backward()
    np.testing.assert_array_equal(a.grad, [7.0, 0.0, 3.0, 0.0])  # np.add.at semantics
    b = Parameter(np.zeros((2, 3)))
    b[np.array([1, 1]), np.array([2, 2])].sum().backward()
    np.testing.assert_array_equal(b.grad, [[0, 0, 0], [0, 0, 2]])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack(axis, numerical_grad, engine_grads):
    check(lambda a, b, c: stack([a, b, c], axis=axis), [(3, 4)] * 3, "normal", numerical_grad, engine_grads)
    xs = [np.random.default_rng(i).standard_normal((3, 4)) for i in range(3)]
    np.testing.assert_array_equal(stack([Tensor(x) for x in xs], axis=axis).data, np.stack(xs, axis=axis))


def test_stack_of_scalars_and_reused_tensor(numerical_grad, engine_grads):
    check(lambda a, b: stack([a, b, a]), [(), ()], "normal", numerical_grad, engine_grads)
    check(lambda a: stack([a, a * 2]), [(3,)], "normal", numerical_grad, engine_grads)


@pytest.mark.parametrize("axis,shapes", [(0, [(2, 4), (3, 4), (1, 4)]), (1, [(3, 1), (3, 4), (3, 2)]),
                                         (-1, [(2, 2, 3), (2, 2, 1), (2, 2, 2)])])
def test_concat(axis, shapes, numerical_grad, engine_grads):
    check(lambda a, b, c: concat([a, b, c], axis=axis), shapes, "normal", numerical_grad, engine_grads)
    xs = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    np.testing.assert_array_equal(concat([Tensor(x) for x in xs], axis=axis).data,
                                  np.concatenate(xs, axis=axis))


def test_stack_and_concat_mix_constants(numerical_grad, engine_grads):
    check(lambda a: stack([a, np.ones(3)]), [(3,)], "normal", numerical_grad, engine_grads)
    check(lambda a: concat([a, np.zeros((1, 2))]), [(2, 2)], "normal", numerical_grad, engine_grads)


def test_stack_and_concat_with_a_constant_first(numerical_grad, engine_grads):
    check(lambda a: stack([np.ones(3), a]), [(3,)], "normal", numerical_grad, engine_grads)
    check(lambda a: concat([np.zeros((1, 2)), a]), [(2, 2)], "normal", numerical_grad, engine_grads)


def test_stack_and_concat_need_tensors():
    with pytest.raises(ValueError, match="stack"):
        stack([])
    with pytest.raises(ValueError, match="concat"):
        concat([])


def test_pow_zero_exponent_gradient_is_zero_everywhere():
    a = Parameter(np.array([0.0, 2.0, -1.0]))
    (a ** 0).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, 0.0])  # d/dx x⁰ = 0, also at x = 0 (as torch)
    b = Parameter(np.array([0.0, 3.0]))
    (b ** 1).sum().backward()
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
