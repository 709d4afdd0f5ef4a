"""gradcheck itself: True on correct gradients, a GradcheckError naming the input and the worst element on a
wrong one (made by breaking an op's backward), and the inputs' dtype, data and .grad restored."""
import re

import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import GradcheckError, Parameter, Tensor, gradcheck, nn, ops
from tinygrad_rnn.demo import hello_example


def test_true_on_correct_gradients():
    a = Parameter(np.random.default_rng(0).standard_normal((3, 4)), name="a")
    b = Parameter(np.random.default_rng(1).standard_normal(4), name="b")
    assert gradcheck(lambda x, y: ((x * y).tanh() @ y).sum(), [a, b]) is True
    # non-scalar outputs are checked through a projection
    assert gradcheck(lambda x, y: (x + y).sigmoid(), [a, b]) is True


def test_constants_among_inputs_are_passed_through():
    a = Parameter(np.array([0.5, -1.0]), name="a")
    c = Tensor(np.array([2.0, 3.0]))
    assert gradcheck(lambda x, k: (x * k).exp().sum(), [a, c])


def _wrong_tanh(a):
    """tanh with a backward that forgets the square: g * (1 - y) instead of g * (1 - y²)."""
    y = np.tanh(a.data)
    return ops.result(y, "tanh", (a,), lambda g: (g * (1 - y),))


def test_wrong_gradient_raises_naming_input_and_worst_element(monkeypatch):
    monkeypatch.setattr(Tensor, "tanh", _wrong_tanh)
    x = np.array([[0.1, 0.2, 0.3], [0.55, 0.05, 2.5]])
    a = Parameter(x.copy(), name="weights")
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda t: t.tanh().sum(), [a])
    message = str(info.value)
    # the worst element is where |(1 - y) - (1 - y²)| = |y - y²| is largest (y near 1/2): index (1, 0)
    y = np.tanh(x)
    worst = np.unravel_index(np.argmax(np.abs(y - y * y)), x.shape)
    assert worst == (1, 0)
    assert "weights" in message and "(2, 3)" in message and "(1, 0)" in message
    numbers = [float(v) for v in re.findall(r"(?:analytical|numerical) (-?[\d.e+-]+)", message)]
    np.testing.assert_allclose(numbers, [1 - y[1, 0], 1 - y[1, 0] ** 2], rtol=1e-5)
    assert isinstance(info.value, AssertionError)  # pytest shows it as a failed assertion


def test_wrong_gradient_of_second_unnamed_input(monkeypatch):
    original = ops.mul

    def wrong_mul(a, b):  # drops the gradient of the second factor
        out = original(a, b)
        back = out._backward
        out._backward = (lambda g: (back(g)[0], None)) if back else None
        return out

    monkeypatch.setattr(Tensor, "__mul__", wrong_mul)
    a = Parameter(np.array([1.0, 2.0]))
    b = Parameter(np.array([1.0, 2.0]))  # equal values: the name comes from the position, not from ==
    with pytest.raises(GradcheckError, match=r"input 1 \(2,\)"):
        gradcheck(lambda x, y: (x * y).sum(), [a, b])


def test_restores_dtype_data_and_grad():
    a = Parameter(np.array([0.5, -0.25], np.float32), name="a")
    a.grad = np.array([7.0, 8.0], np.float32)
    data = a.data
    assert gradcheck(lambda t: (t * t).sum(), [a], atol=1e-4)
    assert a.data is data and a.dtype == np.float32
    np.testing.assert_array_equal(a.grad, [7.0, 8.0])
    b = Parameter(np.ones(2, np.float32), name="b")
    assert gradcheck(lambda t: (t ** 2).sum(), [b]) and b.grad is None and b.dtype == np.float32


def test_restores_inputs_after_failure(monkeypatch):
    monkeypatch.setattr(Tensor, "tanh", _wrong_tanh)
    a = Parameter(np.array([1.0, 2.0], np.float32))
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: t.tanh().sum(), [a])
    assert a.dtype == np.float32 and a.grad is None
    np.testing.assert_array_equal(a.data, [1.0, 2.0])


def test_checks_in_float64():
    # a float32 check of this function would fail at these tolerances; gradcheck switches to float64
    a = Parameter(np.array([3.0, -2.0, 0.7], np.float32))
    assert gradcheck(lambda t: (t.exp() * t ** 3).sum(), [a], atol=1e-8, rtol=1e-7)


def test_errors_without_inputs_requiring_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda t: t.sum(), [Tensor(np.ones(2))])
    with pytest.raises(TypeError, match="Tensor"):
        gradcheck(lambda t: 3.0, [Parameter(np.ones(2))])


def test_bptt_of_the_lecture_network():
    model, xs, targets, _ = hello_example(hidden=3, seed=0, dtype=np.float64)
    assert gradcheck(lambda *ps: model.loss(xs, targets)[0], model.parameters())
    sig = nn.RNN(2, 3, 2, nonlinearity="sigmoid", seed=5, dtype=np.float32)
    xb = np.random.default_rng(5).standard_normal((4, 2, 2))
    tb = np.random.default_rng(6).integers(0, 2, (4, 2))
    assert gradcheck(lambda *ps: sig.loss(xb, tb)[0], sig.parameters())
    assert sig.W.dtype == np.float32


def test_detects_a_wrong_cross_entropy(monkeypatch):
    original = ops.cross_entropy

    def doubled(logits, targets, reduction="mean"):
        out = original(logits, targets, reduction)
        back = out._backward
        out._backward = lambda g: (2 * back(g)[0],)
        return out

    monkeypatch.setattr(ops, "cross_entropy", doubled)
    z = Parameter(np.array([[0.1, 0.2, 0.3]]), name="logits")
    with pytest.raises(GradcheckError, match="logits"):
        gradcheck(lambda t: F.cross_entropy(t, [1]), [z])


def test_leaves_the_gradients_of_other_tensors_alone():
    # checking a model's loss w.r.t. one weight must not leave an extra gradient on the others (the next
    # optimizer step would use it), as torch.autograd.gradcheck does not touch any .grad
    model, xs, targets, _ = hello_example(hidden=3, seed=0, dtype=np.float64)
    model.U.grad = np.full(model.U.shape, 7.0)
    assert gradcheck(lambda W: model.loss(xs, targets)[0], [model.W])
    np.testing.assert_array_equal(model.U.grad, 7.0)
    assert all(P.grad is None for P in (model.b, model.V, model.c, model.W))


# --- NaN and Inf never pass (issue 16 #1): `err.max() > 0` is False for NaN, so the old check returned True ---

def _nan_inf_quiet():
    return np.errstate(invalid="ignore", divide="ignore")


def test_nan_analytic_gradient_fails_as_in_torch():
    # d/dx sqrt(x²) at 0: backward gives inf · 0 = nan, finite differences give 0; torch's gradcheck fails too
    x = Parameter(np.array([0.0, 1.0]), name="x")
    with _nan_inf_quiet(), pytest.raises(GradcheckError) as info:
        gradcheck(lambda t: ((t * t) ** 0.5).sum(), [x])
    message = str(info.value)
    assert "x (2,)" in message and "(0,)" in message and "analytical nan" in message
    assert "numerical 0" in message and "non-finite" in message and "1 of 2" in message
    np.testing.assert_array_equal(x.data, [0.0, 1.0])  # restored after the failure
    assert x.grad is None


@pytest.mark.parametrize("scale,shown", [(np.nan, "nan"), (np.inf, "inf")])
def test_non_finite_function_value_fails(scale, shown):
    x = Parameter(np.array([1.0, 2.0]), name="x")
    with _nan_inf_quiet(), pytest.raises(GradcheckError, match=f"function's value is {shown}"):
        gradcheck(lambda t: (t * scale).sum(), [x])
    y = Parameter(np.array([0.0, 2.0]), name="y")      # log(0) = -inf: the value is checked before anything
    with _nan_inf_quiet(), pytest.raises(GradcheckError, match="value is -inf"):
        gradcheck(lambda t: t.log().sum(), [y])


def test_non_finite_finite_differences_fail():
    # sqrt at 0: the value 0 is finite, but f(−eps) is nan (numerical) and the derivative inf (analytical)
    x = Parameter(np.array([0.0, 4.0]), name="x")
    with _nan_inf_quiet(), pytest.raises(GradcheckError, match=r"at element \(0,\): analytical inf, numerical nan"):
        gradcheck(lambda t: (t ** 0.5).sum(), [x])


@pytest.mark.parametrize("analytic,numeric", [([np.inf, 1.0], [np.inf, 1.0]), ([1.0, np.nan], [1.0, np.nan]),
                                              ([1.0, 2.0], [1.0, -np.inf])])
def test_check_close_refuses_any_non_finite_element(analytic, numeric):
    from tinygrad_rnn.gradcheck import check_close
    with _nan_inf_quiet(), pytest.raises(GradcheckError, match="non-finite"):
        check_close(np.array(analytic), np.array(numeric), "w", "a", "n", 1e-5, 1e-3, 1e-6)
    check_close(np.array([1.0, 2.0]), np.array([1.0, 2.0]), "w", "a", "n", 1e-5, 1e-3, 1e-6)  # finite: passes


def test_truncated_gradcheck_fails_on_nan_too():
    # analysis.truncated_gradcheck compares through gradcheck.check_close, so it inherits the NaN rule
    from tinygrad_rnn.analysis import truncated_gradcheck
    model, xs, targets, _ = hello_example(hidden=3, seed=0, dtype=np.float64)
    assert truncated_gradcheck(model, xs, targets, k=2)
    model.V.data = model.V.data.copy()
    model.V.data[0, 0] = np.nan
    with _nan_inf_quiet(), pytest.raises(GradcheckError, match="non-finite"):
        truncated_gradcheck(model, xs, targets, k=2)
