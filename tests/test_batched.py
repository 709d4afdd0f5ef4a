"""affine (a = x U + s W + b as one node) and step batches (an op applied at every step at once, one node
per step): values and gradients against the same graph written op by op per step, against finite
differences, and the walk's rules for batches (partial backward, retained grads, freeing, anomalies)."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, Unroll, detect_anomaly, gradcheck, nn
from tinygrad_rnn.batched import cross_entropy_steps, linear_steps
from tinygrad_rnn.errors import AnomalyError, GraphFreedError, ShapeError
from tinygrad_rnn.ops import affine, cross_entropy, stack


# --- affine ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_shape", [(3, 4), (4,)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_affine_gradients_match_finite_differences(x_shape, with_bias):
    rng = np.random.default_rng(0)
    x, s = rng.standard_normal(x_shape), rng.standard_normal(x_shape[:-1] + (5,))
    U, W, b = rng.standard_normal((4, 2)), rng.standard_normal((5, 2)), rng.standard_normal(2)
    params = [Parameter(a) for a in (x, U, s, W, b)]
    fn = (lambda x, U, s, W, b: affine([(x, U), (s, W)], b)) if with_bias else \
        (lambda x, U, s, W, b: affine([(x, U), (s, W)]) + 0 * b.sum())
    assert gradcheck(fn, params)
    out = fn(*params)
    np.testing.assert_allclose(out.data, x @ U + s @ W + (b if with_bias else 0), rtol=1e-12)


def test_affine_equals_the_op_by_op_graph_and_keeps_float32():
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3), (3, 4), (2, 4), (4, 4), (4,)]]
    grads = []
    for fused in (True, False):
        x, U, s, W, b = (Parameter(a.copy()) for a in arrays)
        out = affine([(x, U), (s, W)], b) if fused else x @ U + s @ W + b
        (out * out).sum().backward()
        assert out.dtype == np.float32
        grads.append([p.grad for p in (x, U, s, W, b)])
    for g_fused, g_ops in zip(*grads):
        assert g_fused.dtype == np.float32
        np.testing.assert_allclose(g_fused, g_ops, rtol=1e-5, atol=1e-6)


def test_affine_shape_errors_name_the_op_operands_and_step():
    U, W, b = Parameter(np.zeros((4, 3)), name="U"), Parameter(np.zeros((2, 3)), name="W"), \
        Parameter(np.zeros(3), name="b")
    x, s = Tensor(np.zeros((1, 4)), name="x"), Tensor(np.zeros((1, 3)), name="s")
    tape = Unroll()
    with tape, tape.step(1):
        with pytest.raises(ShapeError, match=r"affine at step 1: s has shape \(1, 3\) but W\(1\) has shape "
                                             r"\(2, 3\) \(inner dimensions 3 and 2 differ\)"):
            affine([(x, U), (s, W)], b)
    with pytest.raises(ShapeError, match=r"affine: .*bias must broadcast"):
        affine([(x, U)], Parameter(np.zeros(4), name="c"))


# --- step batches ------------------------------------------------------------------------------------

def _unrolled_states(T=4, B=2, d=3, seed=0):
    """A small recurrence recorded on a tape: states s(1..T) and the shared output weights V, c."""
    rng = np.random.default_rng(seed)
    W = Parameter(rng.standard_normal((d, d)) * 0.5, name="W")
    V, c = Parameter(rng.standard_normal((d, 5)), name="V"), Parameter(rng.standard_normal(5), name="c")
    xs = rng.standard_normal((T, B, d))
    tape = Unroll(shared=[W, V, c])
    s, states = Tensor(np.zeros((B, d))), []
    with tape:
        for t in range(1, T + 1):
            with tape.step(t):
                s = (Tensor(xs[t - 1]) + s @ W).tanh()
                states.append(s)
    return tape, states, (W, V, c), rng.integers(0, 5, size=(T, B))


def _per_step_reference(seed=0):
    """The same graph with y(t) = s(t) V(t) + c(t) and L(t) recorded op by op inside each step."""
    rng = np.random.default_rng(seed)
    tape, states, (W, V, c), targets = _unrolled_states(seed=seed)
    losses = []
    with tape:
        for t, s in enumerate(states, start=1):
            with tape.step(t + 100):  # (steps are entered once each: the output side gets its own steps)
                losses.append(cross_entropy(s @ V + c, targets[t - 1], "sum"))
    stack(losses).sum().backward()
    return tape, (W, V, c), rng


def test_batched_output_side_equals_the_per_step_graph():
    tape, states, (W, V, c), targets = _unrolled_states()
    ys = linear_steps(tape, states, V, c)
    losses = cross_entropy_steps(ys, targets)
    L = stack(losses).sum()
    L.backward()
    ref_tape, (W_ref, V_ref, c_ref), _ = _per_step_reference()
    for p, q in [(W, W_ref), (V, V_ref), (c, c_ref)]:
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12)
    # the members are per-step nodes with their own copies, and the copies keep ∂L/∂V(t)
    assert [y.step for y in ys] == [1, 2, 3, 4] and [L_t.step for L_t in losses] == [1, 2, 3, 4]
    assert [y.parents[1].name for y in ys] == ["V(1)", "V(2)", "V(3)", "V(4)"]
    assert all(y.parents[0] is s for y, s in zip(ys, states))
    np.testing.assert_allclose(tape.step_grads(V), ref_tape.step_grads(V_ref), rtol=1e-12)
    np.testing.assert_allclose(tape.step_grads(V).sum(axis=0), V.grad, rtol=1e-12)
    np.testing.assert_allclose(tape.step_grads(c), ref_tape.step_grads(c_ref), rtol=1e-12)
    for y, s in zip(ys, states):
        np.testing.assert_allclose(y.data, s.data @ V.data + c.data, rtol=1e-12)


def test_batched_gradients_match_finite_differences():
    def loss(V_data):
        tape, states, (W, V, c), targets = _unrolled_states()
        V.data = V_data
        return stack(cross_entropy_steps(linear_steps(tape, states, V, c), targets)).sum()
    rng = np.random.default_rng(0)
    V0 = rng.standard_normal((3, 5))
    L = loss(V0.copy())
    L.backward()
    V = L.parents[0].parents[0].parents[0].parents[1].parents[0]  # L ← stack ← L(1) ← y(1) ← V(1) ← V
    eps, numeric = 1e-6, np.zeros_like(V0)
    for i in np.ndindex(V0.shape):
        plus, minus = V0.copy(), V0.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (loss(plus).item() - loss(minus).item()) / (2 * eps)
    np.testing.assert_allclose(V.grad, numeric, rtol=1e-6, atol=1e-8)


def test_backward_from_one_member_and_retained_member_grads():
    tape, states, (W, V, c), targets = _unrolled_states()
    ys = linear_steps(tape, states, V, c)
    ys[1].retain_grad()
    losses = cross_entropy_steps(ys, targets)
    losses[1].backward()  # L(2) alone: only step 2's output and the states it depends on
    p = np.exp(ys[1].data - ys[1].data.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(2), targets[1]] -= 1
    np.testing.assert_allclose(ys[1].grad, p, rtol=1e-12)  # the notes' p − onehot
    grads = tape.step_grads(V)
    assert not grads[[0, 2, 3]].any() and grads[1].any()
    np.testing.assert_allclose(V.grad, states[1].data.T @ p, rtol=1e-12)
    assert ys[0].grad is None and ys[2].grad is None


def test_batches_free_their_saved_values_unless_retained():
    tape, states, (W, V, c), targets = _unrolled_states()
    L = stack(cross_entropy_steps(linear_steps(tape, states, V, c), targets)).sum()
    L.backward(retain_graph=True)
    first = V.grad.copy()
    L.backward()
    np.testing.assert_allclose(V.grad, 2 * first, rtol=1e-12)
    with pytest.raises(GraphFreedError, match="second time"):
        L.backward()


def test_anomaly_in_a_batch_names_the_member_and_its_step():
    tape, states, (W, V, c), targets = _unrolled_states()
    V.data[0, 0] = np.inf
    with detect_anomaly():
        with pytest.raises(AnomalyError, match=r"linear.* at step 1"):
            linear_steps(tape, states, V, c)


def test_linear_steps_rejects_inputs_outside_steps_and_mixed_shapes():
    tape, states, (W, V, c), _ = _unrolled_states()
    with pytest.raises(ValueError, match="inside a step"):
        linear_steps(tape, states + [Tensor(np.zeros((2, 3)))], V, c)
    with tape, tape.step(5):
        odd = states[1][0]  # (3,), where the others are (2, 3)
    with pytest.raises(ShapeError, match="linear_steps"):
        linear_steps(tape, [states[0], odd], V, c)


def test_rnn_records_batched_output_members_inside_every_step():
    model = nn.RNN(4, 3, 4, seed=0)
    xs = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
    L, out = model.loss(xs, [1, 2, 2, 3])
    assert [y.name for y in out.logits] == ["y(1)", "y(2)", "y(3)", "y(4)"]
    assert [(L_t.name, L_t.step) for L_t in out.losses] == [(f"L({t})", t) for t in range(1, 5)]
    assert [p.name for p in out.logits[2].parents] == ["s(3)", "V(3)", "c(3)"]
    assert [p.name for p in out.tape.parameters] == ["U", "W", "b", "V", "c"]


def test_factored_weight_gradient_is_the_same_in_chunks(monkeypatch):
    from tinygrad_rnn import lazy
    rng = np.random.default_rng(3)
    lefts = [rng.standard_normal((2, 5)) for _ in range(7)]
    rights = [rng.standard_normal((2, 4)) for _ in range(7)]
    dense = sum(a.T @ b for a, b in zip(lefts, rights))
    for chunk in (1, 200, 1 << 30):  # every factor its own chunk, a few per chunk, all in one
        monkeypatch.setattr(lazy, "CHUNK_BYTES", chunk)
        np.testing.assert_allclose(lazy.OuterSum(list(lefts), list(rights)).value(), dense, rtol=1e-12)


# --- split (a multi-output op on the same machinery) ---------------------------------------------------

def test_split_gradients_match_finite_differences_and_skip_unused_pieces():
    from tinygrad_rnn import split
    rng = np.random.default_rng(4)
    assert gradcheck(lambda z: (lambda a, b, c: a.tanh() * 2 + b * c)(*split(z, 2, dim=1)),
                     [Parameter(rng.standard_normal((2, 6)))])
    z = Parameter(rng.standard_normal((2, 6)))
    a, b, c = split(z, 2, dim=1)  # torch's meaning: pieces of 2 columns
    b.sum().backward()  # only the middle piece is used: the others' columns get zeros
    np.testing.assert_array_equal(z.grad, np.array([[0, 0, 1, 1, 0, 0]] * 2))


def test_split_inside_a_step_uses_the_copy_and_carries_the_step():
    from tinygrad_rnn import split
    P = Parameter(np.arange(6.0).reshape(2, 3), name="P")
    tape = Unroll(shared=[P])
    with tape, tape.step(2):
        top, bottom = split(P, 1, dim=0)
    assert top.step == 2 and top.parents[0].name == "P(2)"
    (top.sum() + 3 * bottom.sum()).backward()
    np.testing.assert_array_equal(tape.copies(P)[0].grad, [[1, 1, 1], [3, 3, 3]])
    with pytest.raises(ShapeError, match="split"):
        split(P, [2, 2], dim=1)  # the sizes must add up to 3


# --- review fixes: creation numbers after unpickling, partial backward, bias in place ------------------

def test_unpickled_parameters_are_renumbered_and_get_gradients(monkeypatch):
    import itertools
    import pickle
    from tinygrad_rnn import tensor as engine
    for _ in range(50):
        Tensor(np.zeros(1))  # this process has made nodes: the pickled ids are larger than a fresh process's
    model = nn.Linear(2, 3, seed=0)
    blob = pickle.dumps(model)
    monkeypatch.setattr(engine, "_next_id", itertools.count().__next__)  # a fresh process: numbering restarts
    clone = pickle.loads(blob)
    x = Tensor(np.ones((4, 2)))
    (clone(x) ** 2).sum().backward()
    assert clone.weight.grad is not None and np.any(clone.weight.grad)
    assert clone.weight._id < x._id  # renumbered in this process, before the nodes that use it


def test_backward_from_members_one_at_a_time():
    from tinygrad_rnn import split
    a = Parameter(np.arange(8.0).reshape(2, 4))
    p, q = split(a, 2, dim=1)
    p.sum().backward()
    q.sum().backward()  # the batch was not freed for q, which the first backward did not reach
    np.testing.assert_array_equal(a.grad, np.ones((2, 4)))
    with pytest.raises(GraphFreedError):
        p.sum().backward()  # p's part did run and was freed


def test_in_place_update_of_a_bias_after_affine_is_allowed_but_not_of_a_weight():
    from tinygrad_rnn import no_grad
    from tinygrad_rnn.errors import InplaceError
    x, W, b = Parameter(np.ones((2, 3))), Parameter(np.ones((3, 4))), Parameter(np.zeros(4))
    out = affine([(x, W)], b)
    with no_grad():
        b += 1  # backward never reads b's value (only its shape), as with x @ W + b
    out.sum().backward()
    np.testing.assert_array_equal(W.grad, np.full((3, 4), 2.0))
    out = affine([(x, W)], b)
    with no_grad():
        W *= 2  # but it does read W's (for ∂L/∂x)
    with pytest.raises(InplaceError, match="W|modified"):
        out.sum().backward()
