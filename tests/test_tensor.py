"""Tensor basics and backward semantics: dtypes, attributes, default and explicit output gradients,
accumulation, fan-out, retain_graph and the freed-graph error, graph structure after backward,
gradient buffers that never alias, no_grad, and the softmax+CE backward p − onehot."""
import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import GraphFreedError, Parameter, Tensor, no_grad, stack
from tinygrad_rnn.tensor import is_grad_enabled, topological_order

# --- construction and dtypes ---------------------------------------------------------------------------


def test_default_dtype_is_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor([[1, 2]], dtype=np.float32).dtype == np.float32
    assert Tensor(np.ones(3, np.float16)).dtype == np.float32
    assert Parameter([1.0, 2.0]).dtype == np.float32
    assert (Tensor([1.0]) * 2.0 + 1).dtype == np.float32


def test_float64_is_kept():
    x = np.arange(3.0)
    t = Tensor(x)
    assert t.dtype == np.float64 and t.data is x  # wraps, does not copy
    assert Parameter(x).dtype == np.float64
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64
    assert (Tensor(x).tanh() * 2 + np.ones(3, np.float32)).dtype == np.float64


def test_integer_data_cannot_require_grad():
    assert Tensor([1, 2]).dtype.kind == "i"
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], requires_grad=True)


def test_attributes():
    t = Tensor(np.zeros((2, 3)), requires_grad=True, name="t")
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64 and t.name == "t"
    assert t.requires_grad and t.is_leaf and t.grad is None and t.op is None and t.parents == ()
    assert t.step is None and len(t) == 2
    p = Parameter(np.ones(2), name="W")
    assert p.requires_grad and p.name == "W" and isinstance(p, Tensor)
    assert not Tensor(1.0).requires_grad
    assert "W" in repr(p)


def test_item_numpy_detach():
    a = Parameter(np.array([[2.0]]))
    assert a.item() == 2.0 and isinstance(a.item(), float)
    assert a.numpy() is a.data
    b = (a * 3).detach()
    assert not b.requires_grad and b.is_leaf and b.op is None
    np.testing.assert_array_equal(b.data, [[6.0]])
    c = a.detach()
    assert c.data is a.data  # shares data, cut from the graph
    with pytest.raises(RuntimeError, match="does not require grad"):
        (c * 2).sum().backward()


def test_truth_value_is_an_error():
    with pytest.raises(TypeError, match="ambiguous"):
        bool(Tensor([1.0, 2.0]))


def test_data_reassignment_and_grad_none():
    p = Parameter(np.array([1.0, 2.0], np.float32))
    p.data = p.data.astype(np.float64)
    (p * p).sum().backward()
    assert p.dtype == np.float64 and p.grad.dtype == np.float64
    np.testing.assert_allclose(p.grad, [2.0, 4.0])
    p.data = np.array([5.0, 6.0])  # new values, as an optimizer may assign
    p.grad = None
    (p * p).sum().backward()
    np.testing.assert_allclose(p.grad, [10.0, 12.0])


def test_grad_dtype_follows_leaf():
    w32 = Parameter(np.ones(3, np.float32))
    x64 = Tensor(np.arange(3.0))
    (w32 * x64).sum().backward()  # the product is float64; the leaf's gradient stays float32
    assert w32.grad.dtype == np.float32
    np.testing.assert_allclose(w32.grad, [0.0, 1.0, 2.0])


# --- backward semantics ----------------------------------------------------------------------------------


def test_scalar_default_grad_is_one():
    a = Parameter(np.array(3.0))
    (a * 2).backward()
    assert a.grad == 2.0
    b = Parameter(np.array([[3.0]]))  # any one-element output counts as scalar
    (b * 4).backward()
    np.testing.assert_array_equal(b.grad, [[4.0]])


def test_non_scalar_backward_needs_grad():
    a = Parameter(np.ones(3))
    y = a * 2
    with pytest.raises(RuntimeError, match=r"scalar.*\(3,\)"):
        y.backward()
    assert a.grad is None
    y.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(a.grad, [2.0, 4.0, 6.0])


def test_explicit_grad_shape_is_checked():
    a = Parameter(np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        (a * 2).backward(np.ones(4))
    (a * 2).backward(Tensor(np.ones(3)))
    np.testing.assert_allclose(a.grad, 2.0)


def test_backward_without_grad_requirement_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor(np.ones(2)) * 2).sum().backward()


def test_gradients_accumulate_over_backward_calls():
    a = Parameter(np.array([1.0, 2.0]))
    (a * a).sum().backward()
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad, [2.0 + 3.0, 4.0 + 3.0])


def test_fan_out_node_used_twice():
    # the tinygrad 5ea3d76dfb class of bug: an intermediate feeding two consumers must get both gradients
    x = Parameter(np.array([0.3, -0.7]))
    h = x.tanh()
    y = (h * h + h * 3 + h.exp()).sum()
    y.backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (2 * t + 3 + np.exp(t)) * (1 - t ** 2))
    # a diamond: two paths from x to the output through different ops
    x2 = Parameter(np.array([0.5]))
    a, b = x2 * 2, x2.exp()
    ((a * b) + a).sum().backward()
    np.testing.assert_allclose(x2.grad, 2 * np.exp(0.5) + 2 * 0.5 * np.exp(0.5) + 2)


def test_deep_fan_out_chain():
    # each level uses the previous one twice: the gradient is 2^n, not 1 (every path counted once)
    x = Parameter(np.array(1.0))
    h = x
    for _ in range(20):
        h = h + h
    h.backward()
    assert x.grad == 2.0 ** 20


def test_shared_weight_in_two_places():
    w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]))
    x = np.array([[1.0, -1.0]])
    y = ((Tensor(x) @ w) @ w).sum()
    y.backward()
    # d/dw sum(x w w): x^T (1 w^T) + (x w)^T 1
    ones = np.ones((1, 2))
    np.testing.assert_allclose(w.grad, x.T @ (ones @ w.data.T) + (x @ w.data).T @ ones)


def test_retain_graph_allows_second_backward():
    a = Parameter(np.array([1.0, 2.0]))
    y = (a.exp() * a).sum()
    y.backward(retain_graph=True)
    first = a.grad.copy()
    y.backward()
    np.testing.assert_allclose(a.grad, 2 * first)


def test_second_backward_through_freed_graph_raises_and_changes_nothing():
    a = Parameter(np.array([1.0, 2.0]), name="a")
    b = Parameter(np.array([0.5, 0.5]), name="b")
    h = (a * b).tanh()
    h.retain_grad()
    y = (h * a).sum()
    y.backward()
    before = {t: t.grad.copy() for t in (a, b, h)}
    with pytest.raises(GraphFreedError, match="second time"):
        y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):  # GraphFreedError is a RuntimeError
        y.backward()
    for t, g in before.items():
        np.testing.assert_array_equal(t.grad, g)
    # a new graph built on a freed intermediate is refused too, before any .grad changes
    with pytest.raises(GraphFreedError):
        (h * 2 + a).sum().backward()
    for t, g in before.items():
        np.testing.assert_array_equal(t.grad, g)


def test_graph_structure_survives_backward():
    a = Parameter(np.array([1.0, 2.0]), name="a")
    c = Tensor(np.array([3.0, 4.0]), name="c")
    m = a * c
    m.name = "m"
    s = m.tanh().sum()
    s.backward()
    assert s.op == "sum" and s.parents[0].op == "tanh" and s.parents[0].parents == (m,)
    assert m.op == "mul" and m.parents == (a, c) and m.name == "m" and m.step is None
    assert a.parents == () and a.op is None
    assert [n.op for n in topological_order(s)] == [None, "mul", "tanh", "sum"]


def test_parents_keep_argument_order_and_constants():
    a = Parameter(np.ones(2))
    y = 2.0 - a
    assert y.op == "sub" and y.parents[1] is a and not y.parents[0].requires_grad
    np.testing.assert_array_equal(y.parents[0].data, 2.0)
    z = stack([Tensor(np.zeros(2)), a])
    assert z.op == "stack" and z.parents[1] is a and len(z.parents) == 2


def test_leaf_gradients_never_alias():
    a = Parameter(np.array([1.0, 2.0]))
    b = Parameter(np.array([3.0, 4.0]))
    (a + b).sum().backward()  # add hands the same upstream gradient to both inputs
    assert not np.shares_memory(a.grad, b.grad)
    a.grad += 10
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    c = Parameter(np.ones((2, 2)))
    d = Parameter(np.ones((2, 2)))
    (c - d).sum().backward()
    c.grad *= 0
    np.testing.assert_array_equal(d.grad, -np.ones((2, 2)))
    e = Parameter(np.array([1.0, 2.0]))
    root = e * 1.0
    g = np.array([1.0, 1.0])
    root.backward(g)
    e.grad[0] = 99  # the caller's output gradient is not the leaf's buffer either
    assert g[0] == 1.0


def test_leaf_grads_are_writable_arrays():
    a = Parameter(np.ones((2, 3)))
    a.sum().backward()  # sum's backward broadcasts (a read-only view); the stored grad must be a real array
    a.grad -= 1
    np.testing.assert_array_equal(a.grad, 0)


def test_no_grad_records_nothing():
    a = Parameter(np.array([1.0, 2.0]))
    with no_grad():
        assert not is_grad_enabled()
        y = (a * 2).exp().sum()
    assert is_grad_enabled()
    assert not y.requires_grad and y.parents == () and y.op is None
    with pytest.raises(RuntimeError):
        y.backward()

    @no_grad()
    def f(x):
        return x * 3

    z = f(a)
    assert not z.requires_grad and z.parents == ()
    np.testing.assert_array_equal(z.data, [3.0, 6.0])


def test_no_grad_restores_state_after_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_retain_grad_on_intermediate():
    a = Parameter(np.array([1.0, -2.0]))
    h = (a * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(a.grad, 3 * 2 * h.data)


# --- softmax + cross-entropy: the notes' p − onehot -----------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_cross_entropy_backward_is_p_minus_onehot(reduction):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    targets = np.array([0, 3, 3, 1, 2])
    logits = Parameter(z.copy())
    loss = F.cross_entropy(logits, targets, reduction=reduction)
    loss.backward(np.ones(5) if reduction == "none" else None)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(4)[targets]
    expected = p - onehot
    if reduction == "mean":
        expected = expected / 5
    np.testing.assert_allclose(logits.grad, expected, rtol=1e-12, atol=1e-14)
    losses = -np.log(p[np.arange(5), targets])
    ref = {"sum": losses.sum(), "mean": losses.mean(), "none": losses}[reduction]
    np.testing.assert_allclose(loss.data, ref, rtol=1e-12)


def test_cross_entropy_single_row_is_p_minus_onehot():
    z = np.array([0.2, -1.0, 2.0, 0.5])
    logits = Parameter(z.copy())
    loss = F.cross_entropy(logits, 2, reduction="sum")
    loss.backward()
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(logits.grad, p - np.eye(4)[2], rtol=1e-12)
    np.testing.assert_allclose(loss.item(), -np.log(p[2]), rtol=1e-12)
    assert loss.shape == ()


def test_cross_entropy_equals_manual_log_softmax_graph():
    z = np.random.default_rng(1).standard_normal((3, 6))
    t = np.array([5, 0, 2])
    a, b = Parameter(z.copy()), Parameter(z.copy())
    F.cross_entropy(a, t).backward()
    (-(b.log_softmax() * F.one_hot(t, 6)).sum() / 3).backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12, atol=1e-15)


# --- in-place updates, shape errors, all-or-nothing backward ----------------------------------------------


def test_in_place_update_of_a_tensor_requiring_grad_is_refused_while_recording():
    from tinygrad_rnn import InplaceError

    w = Parameter(np.ones(2), name="w")
    with pytest.raises(InplaceError, match=r"w \(2,\)"):
        w += 1
    with no_grad():  # as optimizers do
        w -= np.array([0.5, 0.25])
    np.testing.assert_array_equal(w.data, [0.5, 0.75])


def test_in_place_update_of_a_saved_value_is_detected_at_backward():
    from tinygrad_rnn import InplaceError

    w = Parameter(np.array([1.0, 2.0]), name="w")
    x = Tensor(np.array([3.0, 4.0]), name="x")
    y = (w * x).sum()
    x *= 2  # x is a constant, so the update itself is allowed; mul saved its old values
    with pytest.raises(InplaceError, match="x"):
        y.backward()
    assert w.grad is None
    # after the update, a fresh forward is fine and uses the new values
    (w * x).sum().backward()
    np.testing.assert_array_equal(w.grad, [6.0, 8.0])


def test_in_place_setitem_and_raw_data_writes():
    x = Tensor(np.zeros(3))
    x[1] = 5.0
    np.testing.assert_array_equal(x.data, [0, 5, 0])
    p = Parameter(np.zeros(3))
    p.data = np.ones(3)  # reassignment is always allowed
    with no_grad():
        p[0] = 2.0
    np.testing.assert_array_equal(p.data, [2, 1, 1])


def test_shape_errors_name_the_op_and_shapes():
    from tinygrad_rnn import ShapeError

    a = Tensor(np.ones((2, 3)), name="a")
    b = Tensor(np.ones(4), name="b")
    with pytest.raises(ShapeError, match=r"add.*a.*\(2, 3\).*b.*\(4,\)"):
        a + b
    with pytest.raises(ShapeError, match=r"matmul.*\(2, 3\).*\(4,\)"):
        a @ b
    with pytest.raises(ShapeError, match="reshape"):
        a.reshape(4, 2)
    with pytest.raises(ShapeError, match="stack"):
        stack([a, b])
    assert issubclass(ShapeError, ValueError)


def test_shape_error_inside_a_step_names_the_step_and_copy():
    from tinygrad_rnn import ShapeError, Unroll

    W = Parameter(np.ones((3, 3)), name="W")
    tape = Unroll(shared=[W])
    with tape.step(1):
        pass
    with pytest.raises(ShapeError, match=r"matmul at step 2.*W\(2\).*\(3, 3\)"):
        with tape.step(2):
            Tensor(np.ones((1, 4)), name="x(2)") @ W


def test_backward_inside_no_grad_is_an_error():
    a = Parameter(np.ones(2))
    y = (a * 2).sum()
    with no_grad():
        with pytest.raises(RuntimeError, match="no_grad"):
            y.backward()
    y.backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0])


def test_failing_backward_changes_no_grad():
    from tinygrad_rnn import ops

    a = Parameter(np.array([1.0, 2.0]), name="a")
    b = Parameter(np.array([3.0, 4.0]), name="b")
    a.grad = np.array([10.0, 10.0])

    def broken(x):
        return ops.result(x.data * 1, "broken", (x,), lambda g: 1 / 0)

    y = (a * 2 + broken(b)).sum()  # a's branch may be swept before the broken one fails
    with pytest.raises(ZeroDivisionError):
        y.backward()
    np.testing.assert_array_equal(a.grad, [10.0, 10.0])
    assert b.grad is None
