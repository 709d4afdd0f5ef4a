"""Replay (tinygrad_rnn/replay.py): a replayed step gives the eager engine's results bit for bit in float64 —
loss, every Parameter's gradient, every copy's ∂L/∂W(t), states, analysis and drawings — and every change
replay cannot prove harmless records again instead of giving a wrong answer."""
import gc
import tracemalloc

import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, Unroll, nn, no_grad
from tinygrad_rnn.analysis.contributions import loss_state_gradients
from tinygrad_rnn.errors import GraphFreedError
from tinygrad_rnn.nn import architectures
from tinygrad_rnn.optim import SGD
from tinygrad_rnn.replay import Replay

N, D, K = 5, 8, 5  # input size, hidden size, classes


def twins(cell="rnn", nonlinearity="tanh", dtype=np.float64):
    """Two identical models: one run eagerly, one replayed."""
    return [nn.RNN(N, D, K, nonlinearity=nonlinearity, seed=1, dtype=dtype, cell=cell) for _ in range(2)]


def data(rng, T=6, B=3):
    shape = (T, N) if B is None else (T, B, N)
    return rng.standard_normal(shape), rng.integers(0, K, shape[:-1])


def assert_same_step(eager, replayed):
    """Loss, graph values and every gradient (leaves and per-step copies) equal bit for bit."""
    (L1, o1), (L2, o2) = eager, replayed
    assert L1.data.tobytes() == L2.data.tobytes()
    for a, b in zip(o1.states + o1.logits + o1.losses + o1.cell_states, o2.states + o2.logits + o2.losses
                    + o2.cell_states):
        assert a.name == b.name and np.array_equal(a.data, b.data), a.name
    m1, m2 = o1.model, o2.model
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert np.array_equal(p.grad, q.grad), name
        assert np.array_equal(o1.tape.step_grads(p), o2.tape.step_grads(q)), name
        for c1, c2 in zip(o1.tape.copies(p), o2.tape.copies(q)):
            assert c1.name == c2.name and np.array_equal(c1.grad, c2.grad), c1.name
    assert np.array_equal(o1.targets, o2.targets) and np.array_equal(o1.inputs, o2.inputs)


def train_side_by_side(cell="rnn", nonlinearity="tanh", steps=4, B=3, zero_grads=True):
    """Eager and replayed training steps on changing data, with SGD updates between them; yields each pair."""
    eager_model, replay_model = twins(cell, nonlinearity)
    replayed = Replay(replay_model.loss)
    opts = [SGD(m.parameters(), lr=0.1) for m in (eager_model, replay_model)]
    rng = np.random.default_rng(0)
    for i in range(steps):
        xs, targets = data(rng, B=B)
        L, out = eager_model.loss(xs, targets)
        L.backward()
        pair = ((L, out), replayed(xs, targets))
        yield i, replayed, pair
        for opt in opts:
            opt.step()
            if zero_grads:
                opt.zero_grad()


@pytest.mark.parametrize("cell, nonlinearity", [("rnn", "tanh"), ("rnn", "sigmoid"), ("gru", "tanh"),
                                                ("lstm", "tanh")])
@pytest.mark.parametrize("B", [3, None])
def test_every_cell_replays_the_eager_step_bit_for_bit(cell, nonlinearity, B):
    for i, replayed, pair in train_side_by_side(cell, nonlinearity, B=B):
        assert_same_step(*pair)
        assert replayed.last_fallback == ("first call" if i == 0 else None)
    assert replayed.replays == 3


def test_gradients_accumulate_across_replays_as_across_eager_steps():
    for _, _, pair in train_side_by_side(zero_grads=False):
        assert_same_step(*pair)


def test_the_same_tensors_come_back_and_the_analysis_reads_them_as_after_an_eager_step():
    outs = []
    for i, replayed, (eager, (L, out)) in train_side_by_side(steps=3):
        outs.append(out)
        assert np.array_equal(loss_state_gradients(eager[1]), loss_state_gradients(out))
    assert outs[1] is outs[2] and outs[1].states[3] is outs[2].states[3]


def test_a_drawing_of_a_replayed_step_is_the_drawing_of_the_eager_one():
    from viz.render import draw
    for _, _, ((L1, _), (L2, _)) in train_side_by_side(steps=2):
        pass
    assert draw(L1, show_grads=True, show_values=True).source == draw(L2, show_grads=True, show_values=True).source


def test_backward_again_after_a_replay_raises_as_after_an_eager_backward():
    for _, _, ((L1, _), (L2, _)) in train_side_by_side(steps=2):
        pass
    for L in (L1, L2):
        with pytest.raises(GraphFreedError):
            L.backward()


# --- a user's own Unroll loop ------------------------------------------------------------------------------

def hand_loop(U, W, b, V):
    def loss(xs, weights):
        tape = Unroll(shared=[U, W, b, V])
        s = Tensor(np.zeros(D))
        total = None
        with tape:
            for t in range(1, len(xs) + 1):
                with tape.step(t):
                    x = Tensor(xs[t - 1], name=f"x({t})")
                    s = (x @ U + s @ W + b).tanh()
                    y = (s @ V).sigmoid()
                    term = (y * y).sum() - (s * weights[t - 1]).sum()
                    total = term if total is None else total + term
        return total, tape
    return loss


def test_a_users_unroll_loop_replays_bit_for_bit():
    rng = np.random.default_rng(3)
    shapes = [(N, D), (D, D), (D,), (D, K)]
    params = [[Parameter(a, name=n) for a, n in zip(arrays, "UWbV")]
              for arrays in [[rng.standard_normal(s) * 0.3 for s in shapes]] for _ in range(2)]
    params = [params[0], [Parameter(p.data.copy(), name=p.name) for p in params[0]]]
    eager, replayed = hand_loop(*params[0]), Replay(hand_loop(*params[1]))
    for i in range(3):
        xs, weights = rng.standard_normal((7, N)), rng.standard_normal((7, D))
        L1, tape1 = eager(xs, weights)
        L1.backward()
        L2, tape2 = replayed(xs, weights)
        assert replayed.last_fallback == ("first call" if i == 0 else None)
        assert L1.data.tobytes() == L2.data.tobytes()
        for p, q in zip(*params):
            assert np.array_equal(p.grad, q.grad) and np.array_equal(tape1.step_grads(p), tape2.step_grads(q))
            p.grad = q.grad = None


def cell_loop(cell):
    """A user's loop over a cell (GRUCell, LSTMCell, RNNCell) inside an Unroll, with its own loss."""
    def loss(xs, weights):
        tape = Unroll(shared=cell.parameters())
        state = total = None
        with tape:
            for t in range(1, len(xs) + 1):
                with tape.step(t):
                    state = cell(xs[t - 1], state)
                    h = state[0] if isinstance(state, tuple) else state
                    term = (h * weights[t - 1]).sum()
                    total = term if total is None else total + term
        return total, tape
    return loss


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_a_users_loop_over_a_cell_replays_bit_for_bit(kind):
    cells = [nn.cells.make_cell(kind, N, D, seed=2, dtype=np.float64) for _ in range(2)]
    eager, replayed = cell_loop(cells[0]), Replay(cell_loop(cells[1]))
    rng = np.random.default_rng(7)
    for i in range(3):
        xs, weights = rng.standard_normal((5, 2, N)), rng.standard_normal((5, 2, D))
        L1, tape1 = eager(xs, weights)
        L1.backward()
        L2, tape2 = replayed(xs, weights)
        assert replayed.last_fallback == ("first call" if i == 0 else None)
        assert L1.data.tobytes() == L2.data.tobytes()
        for p, q in zip(cells[0].parameters(), cells[1].parameters()):
            assert np.array_equal(p.grad, q.grad) and np.array_equal(tape1.step_grads(p), tape2.step_grads(q))
            p.grad = q.grad = None


ARCHITECTURES = {  # model, arguments (integer ids and per-step targets: kept per step, refreshed by row)
    "tagger": (lambda: architectures.SequenceTagger(7, 4, 6, 3, seed=1, dtype=np.float64),
               lambda rng: (rng.integers(0, 7, (5, 2)), rng.integers(0, 3, (5, 2)))),
    "classifier": (lambda: architectures.SequenceClassifier(4, 6, 3, seed=1, dtype=np.float64),
                   lambda rng: (rng.standard_normal((5, 2, 4)), rng.integers(0, 3, (2,)))),
    "seq2seq": (lambda: architectures.Seq2Seq(7, 4, 6, 0, seed=1, dtype=np.float64),
                lambda rng: (rng.integers(1, 7, (5, 2)), rng.integers(1, 7, (4, 2)))),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_replays_bit_for_bit(name):
    make, arguments = ARCHITECTURES[name]
    eager_model, replay_model = make(), make()
    replayed = Replay(replay_model.loss)
    rng = np.random.default_rng(0)
    for i in range(3):
        args = arguments(rng)
        L1 = eager_model.loss(*args)[0]
        L1.backward()
        L2 = replayed(*args)[0]
        assert replayed.last_fallback == ("first call" if i == 0 else None)
        assert L1.data.tobytes() == L2.data.tobytes()
        for p, q in zip(eager_model.parameters(), replay_model.parameters()):
            assert np.array_equal(p.grad, q.grad)
            p.grad = q.grad = None


# --- falling back: never a wrong answer -----------------------------------------------------------------

def test_a_change_of_shape_dtype_or_requires_grad_records_again():
    eager_model, replay_model = twins()
    replayed = Replay(replay_model.loss)
    rng = np.random.default_rng(1)
    calls = [data(rng), data(rng), data(rng, T=9), data(rng, T=9), data(rng, B=None), "freeze V",
             data(rng), data(rng)]
    expected = ["first call", None, "the key changed", None, "the key changed", None, "the key changed", None]
    for call, reason in zip(calls, expected):
        if call == "freeze V":
            eager_model.V.requires_grad = replay_model.V.requires_grad = False
            continue
        for p in eager_model.parameters() + replay_model.parameters():
            p.grad = None
        L, out = eager_model.loss(*call)
        L.backward()
        assert_same_step((L, out), replayed(*call))
        assert (replayed.last_fallback or "").startswith(reason or "") and (reason is None) == (
            replayed.last_fallback is None), (reason, replayed.last_fallback)


def gathered(U):  # advanced indexing keeps the index array: replay refreshes it from the argument
    return lambda xs, index: (Tensor(xs) @ U)[index].sum()


def picked(U):  # the integers become a Python int (a basic index): only the key can see them
    return lambda xs, index: (Tensor(xs) @ U)[int(index[0])].sum()


@pytest.mark.parametrize("loss, third", [(gathered, None), (picked, "not replayable: an integer argument")])
def test_an_index_array_argument_is_refreshed_and_an_integer_used_otherwise_is_part_of_the_key(loss, third):
    rng = np.random.default_rng(2)
    U = Parameter(rng.standard_normal((N, D)), name="U")
    xs = rng.standard_normal((4, N))
    replayed = Replay(loss(U))
    calls = [(np.array([0, 2]), "first call"), (np.array([0, 2]), None), (np.array([1, 3]), third),
             (np.array([0, 2]), third)]
    for index, reason in calls:
        U.grad = None
        L = replayed(xs, index)
        W = Parameter(U.data)
        expected = loss(W)(xs, index)
        expected.backward()
        assert L.item() == expected.item() and np.array_equal(U.grad, W.grad)
        assert (replayed.last_fallback or "").startswith(reason or "") and (reason is None) == (
            replayed.last_fallback is None), replayed.last_fallback


def test_a_value_dependent_branch_is_caught_by_the_proof_run():
    W = Parameter(np.eye(N), name="W")

    def branchy(xs):
        h = Tensor(xs) @ W
        return (h.tanh() if xs.sum() > 0 else h.sigmoid()).sum()
    replayed = Replay(branchy)
    for sign in (1, -1, 1):
        W.grad = None
        L = replayed(sign * np.ones(N))
        assert "not replayable: the graph's structure depends on the arguments' values" in replayed.last_fallback
        expected = np.tanh(sign * np.ones(N)).sum() if sign > 0 else (1 / (1 + np.exp(-sign * np.ones(N)))).sum()
        assert L.item() == pytest.approx(expected)


def test_a_converted_input_and_an_op_without_a_rule_are_not_replayed():
    model = nn.RNN(N, D, K, seed=1, dtype=np.float32)
    replayed = Replay(model.loss)
    rng = np.random.default_rng(4)
    for _ in range(2):
        xs, targets = data(rng)  # float64 inputs into a float32 model: x(t) are views of a converted copy
        L, _ = replayed(xs, targets)
        assert "the leaf x(1) depends on the arguments but is not a view of one" in replayed.last_fallback
    assert replayed.replays == 0
    W = Parameter(np.eye(N), name="W")
    replayed = Replay(lambda xs: (Tensor(xs) @ W).exp().sum())
    replayed(np.ones(N))
    assert "not replayable: exp: no replay rule" in replayed.last_fallback


def test_no_grad_and_values_changed_in_place_record_again():
    eager_model, replay_model = twins()
    replayed = Replay(replay_model.loss)
    rng = np.random.default_rng(5)
    for _ in range(2):
        xs, targets = data(rng)
        L, out = replayed(xs, targets)
    with no_grad():
        out.states[2] *= 0  # a state kept as a factor of ∂L/∂W(3), changed in place
        with pytest.raises(RuntimeError, match="no_grad"):
            replayed(xs, targets)
    assert replayed.last_fallback == "grad mode is off"
    L, out = replayed(xs, targets)
    assert replayed.last_fallback == "a value kept as a factor was changed in place"
    L1, out1 = eager_model.loss(xs, targets)
    L1.backward()
    assert np.array_equal(L1.data, L.data)


@pytest.mark.parametrize("cell, B", [("lstm", 3), ("rnn", 1)])
def test_replay_allocates_nothing_that_grows_with_the_number_of_calls(cell, B):
    model = nn.RNN(N, D, K, seed=1, dtype=np.float64, cell=cell)
    replayed = Replay(model.loss)
    rng = np.random.default_rng(6)
    batches = [data(rng, B=B) for _ in range(4)]
    for xs, targets in batches:
        replayed(xs, targets)
    tracemalloc.start()
    try:
        sizes = []
        for i in range(1000):  # (the target: flat over 1,000 calls)
            for p in model.parameters():
                p.grad = None
            replayed(*batches[i % 4])
            if i % 100 == 99:
                gc.collect()  # (what the cyclic collector would free anyway is not growth)
                sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert replayed.replays == 1003 and gc.isenabled()
    assert max(sizes) - min(sizes) < 2048, sizes  # (tracemalloc's own bookkeeping moves by a few bytes)


def test_the_benchmarks_replayed_row_is_the_eager_row_bit_for_bit():
    import dataclasses

    from benchmarks import bench_bptt as bench
    from benchmarks.implementations import BY_KEY, make_problem
    for row in (bench.Row(2, 5, 6, 4), bench.Row(1, 25, 16, 4)):
        checked = [dataclasses.replace(BY_KEY[key], checked=True) for key in ("tinygrad", "tinygrad_replayed")]
        worst = bench.check_implementations(row, checked)  # (its second call is a replay)
        assert worst["tinygrad_replayed"] == worst["tinygrad"] < 1e-12
        p = make_problem(row, np.float64)
        eager, replayed = BY_KEY["tinygrad"].make(p), BY_KEY["tinygrad_replayed"].make(p)
        for _ in range(3):
            (l1, g1), (l2, g2) = eager(), replayed()
            assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g1)


# --- the compiled backward (replay_backward.Schedule, replay_kernels) ---------------------------------------

def recorded(cell="rnn", nonlinearity="tanh", B=3, dtype=np.float64):
    """An eager model and a replayed twin that has recorded once, with the data of the next step."""
    eager_model, replay_model = [nn.RNN(N, D, K, nonlinearity=nonlinearity, seed=1, dtype=dtype, cell=cell)
                                 for _ in range(2)]
    replayed = Replay(replay_model.loss)
    rng = np.random.default_rng(8)
    (xs, targets), after = data(rng, B=B), data(rng, B=B)
    replayed(xs.astype(dtype), targets)
    return eager_model, replayed, (after[0].astype(dtype), after[1])


def eager_step(model, xs, targets):
    for p in model.parameters():
        p.grad = None
    L, out = model.loss(xs, targets)
    L.backward()
    return L, out


def replay_step(replayed, xs, targets):
    for p in replayed.fn.__self__.parameters():
        p.grad = None
    return replayed(xs, targets)


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
def test_the_vanilla_cell_runs_as_kernels_one_step_per_time_step(nonlinearity):
    from collections import Counter
    _, replayed, _ = recorded(nonlinearity=nonlinearity)
    kinds = Counter(replayed._recorded.schedule.kinds)
    # a(t) → s(t) as one step per time step, the output layer and the loss of all steps as one each, and
    # closures only for the stack of L(t) and the sum; the copies cost no step
    assert kinds == {f"affine+{nonlinearity}": 6, "linear batch": 1, "cross-entropy batch": 1, "closure": 2}


@pytest.mark.parametrize("B", [1, 3])
def test_without_kernels_the_schedule_runs_the_closures_bit_for_bit(monkeypatch, B):
    from tinygrad_rnn import replay_backward
    monkeypatch.setattr(replay_backward, "KERNELS", {})
    monkeypatch.setattr(replay_backward, "BATCH_KERNELS", {})
    eager_model, replayed, (xs, targets) = recorded(B=B)
    assert set(replayed._recorded.schedule.kinds) == {"closure"}
    assert_same_step(eager_step(eager_model, xs, targets), replay_step(replayed, xs, targets))


class Marked(np.ndarray):
    """An ndarray subclass: equal values, but not what a kernel is made for (its check sends it to the closure)."""


def test_a_gradient_a_kernel_is_not_made_for_runs_its_closure_bit_for_bit():
    eager_model, replayed, (xs, targets) = recorded()
    schedule = replayed._recorded.schedule
    last_state = schedule.slot[replayed._recorded.plan.result[1].states[-1]]
    at = schedule.kinds.index("linear batch") + 1  # right after the output layer gave ∂L/∂s(T)
    steps = schedule.steps

    def mark():
        schedule.grads[last_state] = schedule.grads[last_state].view(Marked)
    schedule.steps = steps[:at] + [mark] + steps[at:]
    try:
        assert_same_step(eager_step(eager_model, xs, targets), replay_step(replayed, xs, targets))
        assert schedule.dirty  # (so every copy's gradient was stored the eager way)
    finally:
        schedule.steps = steps
    assert_same_step(eager_step(eager_model, xs, targets), replay_step(replayed, xs, targets))
    assert not schedule.dirty


def test_a_backward_that_fails_halfway_leaves_no_gradient_of_its_own():
    _, replayed, (xs, targets) = recorded()
    schedule, out = replayed._recorded.schedule, replayed._recorded.plan.result[1]
    W = out.model.W
    before = W.grad.copy()
    steps = schedule.steps

    def fail():
        raise FloatingPointError("a failure halfway through the sweep")
    schedule.steps = steps[:len(steps) // 2] + [fail] + steps[len(steps) // 2:]
    try:
        with pytest.raises(FloatingPointError):
            replayed(xs, targets)
    finally:
        schedule.steps = steps
    assert all(c.grad is None for c in out.tape.copies(W))  # as after a failed eager backward
    assert np.array_equal(W.grad, before)  # the parameters' .grad untouched
    L, _ = replay_step(replayed, xs, targets)  # and the next call replays as usual
    assert replayed.last_fallback is None and all(c.grad is not None for c in out.tape.copies(W))


def test_a_replay_matches_eager_at_batch_one_in_float32():
    """The benchmark's shape and dtype: B = 1, float32 (BLAS's single-precision kernels, same bits too)."""
    eager_model, replayed, (xs, targets) = recorded(B=1, dtype=np.float32)
    assert_same_step(eager_step(eager_model, xs, targets), replay_step(replayed, xs, targets))
    assert replayed.last_fallback is None


def test_keyword_arguments_are_refilled_and_their_names_are_part_of_the_key():
    eager_model, replay_model = twins()
    replayed = Replay(replay_model.loss)
    rng = np.random.default_rng(9)
    calls = [{"xs": 0, "targets": 1}, {"xs": 0, "targets": 1}, {"targets": 1}, {"targets": 1}]
    expected = ["first call", None, "the key changed", None]
    for names, reason in zip(calls, expected):
        xs, targets = data(rng)
        args = (xs, targets)
        kwargs = {name: args[k] for name, k in names.items()}
        positional = () if "xs" in names else (xs,)
        for p in eager_model.parameters() + replay_model.parameters():
            p.grad = None
        L, out = eager_model.loss(xs, targets)
        L.backward()
        assert_same_step((L, out), replayed(*positional, **kwargs))
        assert (replayed.last_fallback or "").startswith(reason or "") and (reason is None) == (
            replayed.last_fallback is None), (reason, replayed.last_fallback)


def test_a_node_that_reaches_one_input_twice_replays_bit_for_bit():
    """s + s and d * d: two edges from one node into one slot, summed as the sweep sums them (and a tanh of
    a scalar: its derivative factor is a row of the all-steps array too)."""
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s) * 0.3 for s in [(N, D), (D, D), (D,)]]

    def make():
        U, W, b = (Parameter(a.copy(), name=n) for a, n in zip(arrays, "UWb"))

        def loss(xs):
            tape = Unroll(shared=[U, W, b])
            s, total = Tensor(np.zeros(D)), None
            with tape:
                for t in range(1, len(xs) + 1):
                    with tape.step(t):
                        s = (Tensor(xs[t - 1]) @ U + s @ W + b).tanh()
                        d = (s + s).tanh()
                        term = (d * d).sum().tanh()
                        total = term if total is None else total + term
            return total, tape
        return (U, W, b), loss
    (eager_params, eager), (params, loss) = make(), make()
    replayed = Replay(loss)
    for i in range(3):
        xs = rng.standard_normal((6, N))
        L1, tape1 = eager(xs)
        L1.backward()
        L2, tape2 = replayed(xs)
        assert replayed.last_fallback == ("first call" if i == 0 else None)
        assert L1.data.tobytes() == L2.data.tobytes()
        for p, q in zip(eager_params, params):
            assert np.array_equal(p.grad, q.grad) and np.array_equal(tape1.step_grads(p), tape2.step_grads(q))
            p.grad = q.grad = None


def test_an_in_place_update_elsewhere_does_not_stop_the_replay():
    """Any in-place update moves the engine's epoch, so replay looks at its guards again: they still hold."""
    eager_model, replayed, (xs, targets) = recorded()
    with no_grad():
        elsewhere = Tensor(np.ones(3))
        elsewhere *= 2
    assert_same_step(eager_step(eager_model, xs, targets), replay_step(replayed, xs, targets))
    assert replayed.last_fallback is None
