"""Unroll: the per-step copies W(t) of shared parameters.

The key check: ∂L/∂W(t), read from the copy's .grad, equals the finite-difference derivative of L with
respect to a perturbation of W at step t only (the RNN is rebuilt by hand with W_t = W + δ_t and
differenced over δ_t), and Σ_t ∂L/∂W(t) = ∂L/∂W.
"""
import gc

import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, Unroll, no_grad, stack

D, N, K, T = 3, 2, 4, 5


def tiny_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"U": (N, D), "W": (D, D), "b": (D,), "V": (D, K), "c": (K,)}
    return {name: Parameter(rng.uniform(-0.8, 0.8, size=s).astype(dtype), name=name) for name, s in shapes.items()}


def tiny_data(batch=None, seed=1):
    rng = np.random.default_rng(seed)
    shape = (T, N) if batch is None else (T, batch, N)
    targets = rng.integers(0, K, size=shape[:-1])
    return rng.standard_normal(shape), targets


def rnn_loss(p, xs, targets, tape=None, deltas=None):
    """The lecture RNN written out by hand; with `deltas`, step t uses P + deltas[name][t-1] instead of P."""
    s = Tensor(np.zeros(xs.shape[1:-1] + (D,)))
    losses = []
    for t in range(1, len(xs) + 1):
        def use(name):
            return p[name] if deltas is None or name not in deltas else p[name] + deltas[name][t - 1]
        scope = tape.step(t) if tape is not None else _nothing()
        with scope:
            x = Tensor(xs[t - 1])
            s = (x @ use("U") + s @ use("W") + use("b")).tanh()
            losses.append(F.cross_entropy(s @ use("V") + use("c"), targets[t - 1], reduction="sum"))
    return stack(losses).sum()


def recorded(batch=None):
    """The tiny RNN recorded on a tape with every parameter shared: (params, xs, targets, tape, L)."""
    p = tiny_params()
    xs, targets = tiny_data(batch)
    tape = Unroll(shared=list(p.values()))
    with tape:
        L = rnn_loss(p, xs, targets, tape)
    return p, xs, targets, tape, L


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("batch", [None, 3])
def test_copies_sum_to_shared_gradient(batch):
    p, xs, targets, tape, L = recorded(batch)
    L.backward()
    assert tape.steps == list(range(1, T + 1))
    assert tape.parameters == [p[n] for n in ("U", "W", "b", "V", "c")]
    for P in p.values():
        grads = tape.step_grads(P)
        assert grads.shape == (T,) + P.shape
        np.testing.assert_allclose(grads.sum(axis=0), P.grad, rtol=1e-12, atol=1e-14)
        for c, g in zip(tape.copies(P), grads):
            np.testing.assert_array_equal(c.grad, g)
    # and the shared gradient itself is the plain (copy-free) graph's gradient
    q = tiny_params()
    rnn_loss(q, xs, targets).backward()
    for name in p:
        np.testing.assert_allclose(p[name].grad, q[name].grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["W", "U", "b", "V"])
@pytest.mark.parametrize("batch", [None, 2])
def test_copy_gradient_is_derivative_wrt_that_step_only(name, batch):
    p, xs, targets, tape, L = recorded(batch)
    L.backward()
    eps = 1e-6
    deltas = np.zeros((T,) + p[name].shape)
    numeric = np.zeros_like(deltas)
    with no_grad():
        for idx in np.ndindex(*deltas.shape):  # perturb W at step idx[0] only
            deltas[idx] = eps
            plus = rnn_loss(p, xs, targets, deltas={name: deltas}).item()
            deltas[idx] = -eps
            minus = rnn_loss(p, xs, targets, deltas={name: deltas}).item()
            deltas[idx] = 0
            numeric[idx] = (plus - minus) / (2 * eps)
    step_grads = tape.step_grads(p[name])
    np.testing.assert_allclose(step_grads, numeric, atol=1e-7, rtol=1e-6)
    # the copies really differ from step to step (not T copies of the total)
    assert not np.allclose(step_grads[0], step_grads[-1])


def test_copy_nodes_structure():
    p = tiny_params()
    xs, targets = tiny_data(2)
    tape = Unroll(shared=[p["W"], p["U"]])
    with tape:
        L = rnn_loss(p, xs, targets, tape)
    L.backward()
    copies = tape.copies(p["W"])
    assert len(copies) == T
    for t, c in enumerate(copies, start=1):
        assert c.op == "copy" and c.parents == (p["W"],) and c.name == f"W({t})" and c.step == t
        assert c.data is p["W"].data  # a graph node, not a duplicated array
        assert c.requires_grad and not c.is_leaf
    assert tape.parameters == [p["U"], p["W"]]  # order of first use; b, V, c are not shared here
    with pytest.raises(KeyError, match="V"):
        tape.copies(p["V"])


def test_one_copy_per_parameter_per_step_even_when_used_twice():
    W = Parameter(np.array([[0.5, -0.2], [0.1, 0.3]]), name="W")
    tape = Unroll(shared=[W])
    s = Tensor(np.array([1.0, 2.0]))
    with tape:
        for t in (1, 2, 3):
            with tape.step(t):
                h = s @ W
                s = (h + (h @ W) * W.sum(axis=0)).tanh()  # W used three times in this step
    s.sum().backward()
    copies = tape.copies(W)
    assert len(copies) == 3
    for t, c in enumerate(copies, start=1):
        users = [n for n in _all_nodes(s) if any(q is c for q in n.parents)]
        assert len(users) == 3 and all(u.step == t for u in users)
        assert all(all(q is not W for q in u.parents) for u in users)  # every use goes through the copy
    np.testing.assert_allclose(tape.step_grads(W).sum(axis=0), W.grad, rtol=1e-12)


def _all_nodes(root):
    seen, stack_, out = set(), [root], []
    while stack_:
        n = stack_.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        stack_.extend(n.parents)
    return out


def test_every_node_inside_a_step_carries_its_step():
    p = tiny_params()
    xs, targets = tiny_data(2)
    tape = Unroll(shared=list(p.values()))
    before = Tensor(1.0) * p["c"]
    with tape:
        L = rnn_loss(p, xs, targets, tape)
    after = p["c"] * 2
    nodes = _all_nodes(L)
    params = set(map(id, p.values()))
    inside = [n for n in nodes if n.step is not None]
    outside = [n for n in nodes if n.step is None]
    assert {n.step for n in inside} == set(range(1, T + 1))
    # outside steps: the parameters, the initial state, and the final stack / sum
    assert {n.op for n in outside} <= {None, "stack", "sum"}
    assert all(id(n) in params for n in outside if n.op is None and n.requires_grad)
    assert before.step is None and after.step is None
    # inside step t, a node's parents belong to step t, to an earlier step, or are outside any step
    for n in inside:
        assert all(q.step is None or q.step <= n.step for q in n.parents)
    constants = [n for n in inside if n.op is None]
    assert constants and all(not n.requires_grad for n in constants)  # x(t) are made inside their step


def test_shared_none_copies_every_parameter_used_in_a_step():
    A = Parameter(np.ones((2, 2)), name="A")
    B = Parameter(np.full(2, 0.5), name="B")
    C = Parameter(np.full(2, 2.0), name="C")  # used outside steps only
    nonparam = Tensor(np.ones(2), requires_grad=True)  # requires grad, but not a Parameter
    tape = Unroll()
    s = Tensor(np.array([1.0, -1.0]))
    with tape:
        for t in (1, 2):
            with tape.step(t):
                s = (s @ A + B * nonparam).tanh()
    L = (s * C).sum()
    L.backward()
    assert tape.parameters == [A, B]
    assert [c.name for c in tape.copies(A)] == ["A(1)", "A(2)"]
    assert all(q is nonparam for n in _all_nodes(L) for q in n.parents if q.op is None and q.name is None
               and q.requires_grad)
    for P in (A, B):
        np.testing.assert_allclose(tape.step_grads(P).sum(axis=0), P.grad, rtol=1e-12)
    with pytest.raises(KeyError):
        tape.copies(C)


def test_parameter_used_inside_and_outside_steps():
    W = Parameter(np.array([[0.3, 0.1], [-0.2, 0.4]]), name="W")
    tape = Unroll(shared=[W])
    s = Tensor(np.array([1.0, 0.5]))
    with tape:
        for t in (1, 2):
            with tape.step(t):
                s = (s @ W).tanh()
    L = (s @ W).sum() + (W * W).sum()  # uses outside any step go straight to W
    L.backward()
    outside = np.outer(s.data, np.ones(2)) + 2 * W.data  # d/dW of sum(s W) + sum(W*W), s held fixed
    np.testing.assert_allclose(tape.step_grads(W).sum(axis=0) + outside, W.grad, rtol=1e-12)


def test_step_grads_zero_where_no_gradient_arrives():
    W = Parameter(np.eye(2) * 0.5, name="W")
    tape = Unroll(shared=[W])
    with tape:
        with tape.step(1):
            dead = (Tensor(np.ones(2)) @ W).sum()  # never reaches the loss
        with tape.step(2):
            L = (Tensor(np.array([1.0, 2.0])) @ W).sum()
    L.backward()
    assert dead.requires_grad
    grads = tape.step_grads(W)
    np.testing.assert_array_equal(grads[0], 0)
    np.testing.assert_allclose(grads[1], W.grad)


def test_copies_listed_only_for_steps_that_used_the_parameter():
    W = Parameter(np.ones((2, 2)), name="W")
    tape = Unroll(shared=[W])
    s = Tensor(np.ones(2))
    with tape:
        for t in (1, 2, 3, 4):
            with tape.step(t):
                s = s @ W if t % 2 == 0 else s * 2
    s.sum().backward()
    assert [c.step for c in tape.copies(W)] == [2, 4]
    assert tape.step_grads(W).shape == (2, 2, 2)


def test_copy_gradients_accumulate_over_repeated_backward():
    p, xs, targets, tape, L = recorded(2)
    L.backward(retain_graph=True)
    once = {name: tape.step_grads(P).copy() for name, P in p.items()}
    L.backward()
    for name, P in p.items():
        np.testing.assert_allclose(tape.step_grads(P), 2 * once[name], rtol=1e-12)
        np.testing.assert_allclose(tape.step_grads(P).sum(axis=0), P.grad, rtol=1e-12)


def test_copy_gradients_accumulate_when_read_between_backwards():
    p, xs, targets, tape, L = recorded(None)
    L.backward(retain_graph=True)
    first = tape.copies(p["W"])[2].grad.copy()  # reading forms the dense gradient
    L.backward(retain_graph=True)
    L.backward()
    np.testing.assert_allclose(tape.copies(p["W"])[2].grad, 3 * first, rtol=1e-12)
    np.testing.assert_allclose(tape.step_grads(p["W"]).sum(axis=0), p["W"].grad, rtol=1e-12)


def test_copy_gradients_do_not_alias_each_other_or_the_parameter():
    p, xs, targets, tape, L = recorded(2)
    L.backward()
    W = p["W"]
    total = W.grad.copy()
    grads = [c.grad for c in tape.copies(W)]
    grads[0] += 100.0
    np.testing.assert_array_equal(W.grad, total)
    assert not np.shares_memory(grads[0], grads[1])
    b_copies = tape.copies(p["b"])
    b_copies[0].grad[...] = 0
    assert np.abs(b_copies[1].grad).sum() > 0 and np.abs(p["b"].grad).sum() > 0


def test_copy_gradients_unchanged_by_later_in_place_updates():
    # a copy's gradient is ∂L/∂W(t) at the time of backward: an optimizer step afterwards (in place, as
    # p.data -= lr * p.grad) on another parameter must not change it (e.g. a learned initial state s0)
    W = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]), name="W")
    s0 = Parameter(np.array([[1.0, 0.0], [2.0, 1.0]]), name="s0")
    tape = Unroll(shared=[W])
    with tape:
        with tape.step(1):
            L = (s0 @ W).tanh().sum()
    L.backward()
    expected = W.grad.copy()
    s0.data -= 0.5 * s0.grad
    np.testing.assert_allclose(tape.copies(W)[0].grad, expected)


def test_step_misuse_is_a_clear_error():
    tape = Unroll()
    with tape.step(1):
        pass
    with pytest.raises(ValueError, match=r"Unroll.step\(1\)"):
        with tape.step(1):
            pass
    with tape.step(3):
        pass
    with pytest.raises(ValueError, match=r"Unroll.step\(2\)"):
        with tape.step(2):
            pass
    other = Unroll()
    with pytest.raises(ValueError, match="nest"):
        with tape.step(4):
            with other.step(1):
                pass
    assert Tensor(1.0).step is None  # the failed scope left no step active


def test_no_grad_inside_a_step_records_no_copies():
    W = Parameter(np.ones((2, 2)), name="W")
    tape = Unroll(shared=[W])
    with tape.step(1):
        with no_grad():
            y = Tensor(np.ones(2)) @ W
    assert not y.requires_grad and tape.parameters == []


def test_long_unroll_backward_without_recursion_error():
    T_long, d = 10_000, 2
    rng = np.random.default_rng(0)
    W = Parameter(rng.uniform(-0.5, 0.5, (d, d)), name="W")
    U = Parameter(rng.uniform(-0.5, 0.5, (1, d)), name="U")
    xs = rng.standard_normal((T_long, 1))
    tape = Unroll(shared=[W, U])
    s = Tensor(np.zeros(d))
    with tape:
        for t in range(1, T_long + 1):
            with tape.step(t):
                s = (Tensor(xs[t - 1]) @ U + s @ W).tanh()
    L = (s * s).sum()
    L.backward()
    grads = tape.step_grads(W)
    assert grads.shape == (T_long, d, d) and np.all(np.isfinite(W.grad))
    np.testing.assert_allclose(grads.sum(axis=0), W.grad, rtol=1e-10, atol=1e-14)
    # the last steps dominate (contractive W): the gradient check near the end, by hand, for one step
    assert np.abs(grads[-1]).sum() > 0
    del L, s, tape, grads
    gc.collect()  # freeing a 10,000-deep graph must not overflow the C stack either


def test_long_plain_chain_backward():
    x = Parameter(np.array([0.5]))
    h = x
    for _ in range(12_000):
        h = h + 0.5
    h.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])
    del h
    gc.collect()


def test_copy_gradient_does_not_alias_the_callers_output_gradient():
    # backward(grad=g) with a caller's array: the copies' gradients must not change when g is reused
    W = Parameter(np.array([[0.5, 0.1], [0.2, 0.3]]), name="W")
    x = Tensor(np.array([[1.0, 2.0]]))
    tape = Unroll(shared=[W])
    with tape.step(1):
        y = x @ W
    g = np.array([[1.0, -1.0]])
    y.backward(g)
    g[...] = 0
    np.testing.assert_allclose(tape.copies(W)[0].grad, [[1.0, -1.0], [2.0, -2.0]])
    np.testing.assert_allclose(W.grad, [[1.0, -1.0], [2.0, -2.0]])


def test_in_place_update_of_a_shared_parameter_before_backward_is_detected():
    # as without a tape: W updated in place after the forward (under no_grad, as an optimizer would) makes
    # the saved W inside step 1 stale; backward must refuse rather than return a wrong gradient for x
    from tinygrad_rnn import InplaceError

    W = Parameter(np.array([[0.5, 0.1], [0.2, 0.3]]), name="W")
    x = Parameter(np.array([[1.0, 2.0]]), name="x")
    tape = Unroll(shared=[W])
    with tape.step(1):
        y = (x @ W).sum()
    with no_grad():
        W -= 1.0
    with pytest.raises(InplaceError, match="W"):
        y.backward()
    assert x.grad is None and W.grad is None


def test_training_loop_with_in_place_updates_between_forwards():
    # in-place optimizer updates *between* iterations (a new forward each time) are fine
    W = Parameter(np.array([[0.5, 0.1], [0.2, 0.3]]), name="W")
    x = Tensor(np.array([[1.0, 2.0]]))
    for _ in range(3):
        tape = Unroll(shared=[W])
        with tape.step(1):
            L = (x @ W).tanh().sum()
        L.backward()
        expected = x.data.T @ (1 - np.tanh(x.data @ W.data) ** 2)
        np.testing.assert_allclose(W.grad, expected)
        np.testing.assert_allclose(tape.copies(W)[0].grad, expected)
        with no_grad():
            W -= 0.1 * W.grad
        W.grad = None


def _two_layer_cell_loss(W0, deltas=None, tape=None, T_steps=3):
    """s_t = tanh(tanh(s_{t-1} W_t) W_t): W used twice per step, both times through a matmul (so both of its
    gradient contributions are kept as factors, see lazy.py)."""
    W = Parameter(W0.copy(), name="W")
    s = Tensor(np.array([[1.0, -0.5], [0.3, 0.8]]))
    for t in range(1, T_steps + 1):
        scope = tape.step(t) if tape is not None else _nothing()
        with scope:
            Wt = W if deltas is None else W + deltas[t - 1]
            s = ((s @ Wt).tanh() @ Wt).tanh()
    return (s * s).sum(), W


def test_copy_gradients_when_used_twice_through_matmul():
    W0 = np.random.default_rng(0).uniform(-0.9, 0.9, (2, 2))
    tape = Unroll()
    with tape:
        L, W = _two_layer_cell_loss(W0, tape=tape)
    L.backward()
    step_grads = tape.step_grads(W)
    eps = 1e-6
    numeric = np.zeros((3, 2, 2))
    with no_grad():
        for idx in np.ndindex(*numeric.shape):
            d = np.zeros((3, 2, 2))
            d[idx] = eps
            plus = _two_layer_cell_loss(W0, d)[0].item()
            d[idx] = -eps
            minus = _two_layer_cell_loss(W0, d)[0].item()
            numeric[idx] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(step_grads, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(step_grads.sum(axis=0), W.grad, rtol=1e-12)


def test_copies_do_not_duplicate_the_weight_in_memory():
    # T copies of a 256×256 weight would cost T·|W| = 50 × 256 KiB; the copies share W's array instead
    import tracemalloc

    d, T_steps = 256, 50
    W = Parameter(np.random.default_rng(0).uniform(-0.05, 0.05, (d, d)).astype(np.float32), name="W")
    xs = np.random.default_rng(1).standard_normal((T_steps, d)).astype(np.float32)
    tracemalloc.start()
    tape = Unroll(shared=[W])
    s = Tensor(np.zeros(d, np.float32))
    with tape:
        for t in range(1, T_steps + 1):
            with tape.step(t):
                s = (Tensor(xs[t - 1]) + s @ W).tanh()
    L = s.sum()
    forward, _ = tracemalloc.get_traced_memory()
    L.backward()  # W.grad (one |W|) is formed; the copies' own gradients only when read
    after_backward, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    weight = W.data.nbytes
    assert all(c.data is W.data for c in tape.copies(W))
    assert forward < 2 * weight, f"forward kept {forward} bytes for a {weight}-byte weight over {T_steps} steps"
    assert after_backward < 4 * weight, f"backward kept {after_backward} bytes"
    np.testing.assert_allclose(tape.step_grads(W).sum(axis=0), W.grad, rtol=1e-4, atol=1e-6)
