"""`==` between two tensors is elementwise, as torch's (issue 13), so nothing in the engine may find a tensor
with `in` on a list, `list.index` or `list.remove` any more: these tests pin torch's meaning and the engine
paths that once relied on identity equality (gradcheck, detect_anomaly, Unroll's shared set), each with
tensors of equal values, where a value comparison would pick the wrong tensor."""
import numpy as np
import pytest
import torch

from tinygrad_rnn import Parameter, Tensor, Unroll, detect_anomaly, enable_grad, gradcheck, no_grad
from tinygrad_rnn.errors import AnomalyError, ShapeError


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
@pytest.mark.parametrize("shapes", [((3,), (3,)), ((2, 1), (3,)), ((), (2, 2)), ((), ())])
def test_tensor_tensor_comparisons_match_torch_with_broadcasting(op, shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 3, s).astype(np.float32) for s in shapes)  # small integers: many ties
    p, q = Parameter(a), Parameter(b)
    ours, theirs = getattr(p, op)(q), getattr(torch.tensor(a), op)(torch.tensor(b))
    assert isinstance(ours, Tensor) and ours.dtype == np.bool_ and ours.shape == tuple(theirs.shape)
    assert not ours.requires_grad and ours.is_leaf and ours.parents == ()  # outside the graph, as torch
    np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_comparing_tensors_that_do_not_broadcast_names_the_op_and_shapes():
    with pytest.raises(ShapeError, match=r"eq: .*\(2,\).*\(3,\)"):
        Tensor(np.ones(2)) == Tensor(np.ones(3))  # noqa: B015


def test_comparison_with_none_or_text_falls_back_to_identity():
    t = Tensor(np.ones(2))
    assert (t == None) is False and (t != None) is True and (t == "x") is False  # noqa: E711


def test_in_on_a_list_compares_values_as_in_torch():
    """The trap the docstring names: equal one-element tensors are `in` each other's lists; more elements are
    ambiguous. Sets and dicts find tensors by identity."""
    a, b = Tensor(1.0), Tensor(1.0)
    ta, tb = torch.tensor(1.0), torch.tensor(1.0)
    assert (a in [b]) == (ta in [tb]) is True
    assert [b, a].index(a) == [tb, ta].index(ta) == 0  # the first equal one, not a itself
    assert a not in {b} and a in {a, b} and len({a: 0, b: 1}) == 2
    with pytest.raises(TypeError, match="ambiguous"):
        Tensor([1.0, 2.0]) in [Tensor([1.0, 3.0])]  # noqa: B015
    with pytest.raises(RuntimeError, match="ambiguous"):
        torch.tensor([1.0, 2.0]) in [torch.tensor([1.0, 3.0])]  # noqa: B015


def test_gradcheck_tells_equal_scalar_inputs_and_other_leaves_apart():
    a, b = Parameter(np.array(0.5)), Parameter(np.array(0.5))
    other = Parameter(np.array(0.5))  # a leaf of fn's graph that is not checked: its .grad must be kept
    other.grad = np.array(7.0)
    assert gradcheck(lambda x, y: (x * y * other).tanh() + x, [a, b])
    assert other.grad == 7.0 and a.grad is None and b.grad is None


def test_detect_anomaly_finds_the_line_of_each_multi_element_node():
    x = Parameter(np.array([1.0, -1.0]))
    with detect_anomaly() as mode, np.errstate(all="ignore"):
        twin = x * 1.0  # an equal-valued node made on another line
        y = x * 1.0
        assert "twin = x * 1.0" in mode.where(twin) and "y = x * 1.0" in mode.where(y)
        with pytest.raises(AnomalyError, match=r"log.*created at .*z = y.log\(\)"):
            z = y.log()
            (z * z).sum().backward()


def test_unroll_shares_only_the_listed_tensor_not_an_equal_one():
    W = Parameter(np.array(2.0), name="W")
    same_value = Parameter(np.array(2.0), name="V")
    tape = Unroll(shared=[W])
    with tape, tape.step(1):
        out = W * same_value
    assert [str(c.name) for c in tape.copies(W)] == ["W(1)"]
    assert len(tape.parameters) == 1 and tape.parameters[0] is W
    assert any(p is same_value for p in out.parents)  # V used itself: it was not listed as shared


def test_enable_grad_records_again_inside_no_grad():
    w = Parameter(np.array([1.0, 2.0]))
    with no_grad():
        assert (w * 2).requires_grad is False
        with enable_grad():
            y = (w * w).sum()
        assert (w * 2).requires_grad is False
    assert y.requires_grad
    y.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])

    @enable_grad()
    def recorded(v):
        return (v * 3).sum()

    with no_grad():
        z = recorded(w)
    assert z.requires_grad and z.op
