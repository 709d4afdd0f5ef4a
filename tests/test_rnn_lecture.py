"""The lecture RNN (nn.RNN) against a hand-written numpy BPTT in the style of Karpathy's min-char-rnn,
row-vector convention:

    a_t = x_t U + s_{t-1} W + b,  s_t = σ(a_t),  y_t = s_t V + c,  L = Σ_t Σ_batch −log softmax(y_t)[target_t]

Loss, every shared gradient, every per-step copy's gradient (∂L/∂W(t) = s_{t-1}ᵀ δ_t) and the graph's names.
"""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, nn
from tinygrad_rnn.data import CharVocab
from tinygrad_rnn.demo import hello_example


def numpy_bptt(U, W, b, V, c, xs, targets, s0, nonlinearity):
    """Forward and backward by hand. Returns loss, shared grads, per-step grads and ∂L/∂s0."""
    sigma = np.tanh if nonlinearity == "tanh" else (lambda a: 1 / (1 + np.exp(-a)))
    T = len(xs)
    s = {0: s0}
    p, a = {}, {}
    loss = 0.0
    for t in range(1, T + 1):
        a[t] = xs[t - 1] @ U + s[t - 1] @ W + b
        s[t] = sigma(a[t])
        y = s[t] @ V + c
        e = np.exp(y - y.max(-1, keepdims=True))
        p[t] = e / e.sum(-1, keepdims=True)
        loss += -np.log(np.take_along_axis(p[t], np.asarray(targets[t - 1])[..., None], -1)).sum()
    grads = {k: np.zeros_like(v) for k, v in dict(U=U, W=W, b=b, V=V, c=c).items()}
    steps = {k: np.zeros((T,) + v.shape) for k, v in grads.items()}
    ds_next = np.zeros_like(s0)
    for t in range(T, 0, -1):
        dy = p[t] - np.eye(p[t].shape[-1])[targets[t - 1]]  # the notes' p − onehot
        ds = dy @ V.T + ds_next
        da = ds * ((1 - s[t] ** 2) if nonlinearity == "tanh" else s[t] * (1 - s[t]))
        x2, s2, da2, dy2 = (np.atleast_2d(v) for v in (xs[t - 1], s[t - 1], da, dy))
        steps["V"][t - 1] = np.atleast_2d(s[t]).T @ dy2
        steps["c"][t - 1] = dy2.sum(0)
        steps["U"][t - 1] = x2.T @ da2
        steps["W"][t - 1] = s2.T @ da2
        steps["b"][t - 1] = da2.sum(0)
        ds_next = da @ W.T
    for k in grads:
        grads[k] = steps[k].sum(0)
    return loss, grads, steps, ds_next


def _data(T, B, n, k, seed):
    rng = np.random.default_rng(seed)
    shape = (T, n) if B is None else (T, B, n)
    return rng.standard_normal(shape), rng.integers(0, k, size=shape[:-1])


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
@pytest.mark.parametrize("B", [None, 1, 3])
def test_matches_numpy_bptt(nonlinearity, B):
    T, n, d, k = 6, 3, 4, 5
    model = nn.RNN(n, d, k, nonlinearity=nonlinearity, seed=1, dtype=np.float64)
    xs, targets = _data(T, B, n, k, seed=2)
    s0 = np.random.default_rng(3).standard_normal(xs.shape[1:-1] + (d,)) * 0.5
    L, out = model.loss(xs, targets, s0=s0)
    L.backward()
    ps = {name: P.data for name, P in model.named_parameters()}
    loss, grads, steps, _ = numpy_bptt(ps["U"], ps["W"], ps["b"], ps["V"], ps["c"], xs, targets, s0, nonlinearity)
    np.testing.assert_allclose(L.item(), loss, rtol=1e-12)
    for name, P in model.named_parameters():
        np.testing.assert_allclose(P.grad, grads[name], rtol=1e-10, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(out.tape.step_grads(P), steps[name], rtol=1e-10, atol=1e-13, err_msg=name)
    for t in range(1, T + 1):  # the states too
        sigma = np.tanh if nonlinearity == "tanh" else (lambda a: 1 / (1 + np.exp(-a)))
        np.testing.assert_allclose(out.states[t].data,
                                   sigma(xs[t - 1] @ ps["U"] + out.states[t - 1].data @ ps["W"] + ps["b"]))


def test_learned_initial_state_gets_its_gradient():
    T, n, d, k = 4, 2, 3, 3
    model = nn.RNN(n, d, k, seed=4, dtype=np.float64)
    xs, targets = _data(T, 2, n, k, seed=5)
    s0 = Parameter(np.random.default_rng(6).standard_normal((2, d)) * 0.3, name="s0")
    L, out = model.loss(xs, targets, s0=s0)
    L.backward()
    ps = {name: P.data for name, P in model.named_parameters()}
    _, _, _, ds0 = numpy_bptt(ps["U"], ps["W"], ps["b"], ps["V"], ps["c"], xs, targets, s0.data, "tanh")
    np.testing.assert_allclose(s0.grad, ds0, rtol=1e-10)
    assert out.states[0] is s0


def test_float32_matches_float64_reference():
    model, xs, targets, _ = hello_example(hidden=3, seed=0)
    assert model.dtype == np.float32 and all(P.dtype == np.float32 for P in model.parameters())
    L, out = model.loss(xs, targets)
    L.backward()
    assert L.dtype == np.float32 and all(P.grad.dtype == np.float32 for P in model.parameters())
    ps = {name: P.data.astype(np.float64) for name, P in model.named_parameters()}
    loss, grads, _, _ = numpy_bptt(ps["U"], ps["W"], ps["b"], ps["V"], ps["c"], xs.astype(np.float64), targets,
                                   np.zeros(3), "tanh")
    np.testing.assert_allclose(L.item(), loss, rtol=1e-5)
    for name, P in model.named_parameters():
        np.testing.assert_allclose(P.grad, grads[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_graph_names_steps_and_output_fields():
    model, xs, targets, vocab = hello_example(hidden=3, seed=0)
    L, out = model.loss(xs, targets)
    T = 4
    assert L.name == "L" and out.T == T and len(out.logits) == T and len(out.states) == T + 1
    assert [y.name for y in out.logits] == [f"y({t})" for t in range(1, T + 1)]
    assert [s.name for s in out.states] == [f"s({t})" for t in range(T + 1)]
    assert [a.name for a in out.preactivations] == [f"a({t})" for t in range(1, T + 1)]
    assert [l.name for l in out.losses] == [f"L({t})" for t in range(1, T + 1)]
    assert [y.step for y in out.logits] == [1, 2, 3, 4] and out.states[0].step is None
    assert [l.step for l in out.losses] == [1, 2, 3, 4] and L.step is None
    assert out.tape.steps == [1, 2, 3, 4]
    assert out.model is model and out.inputs.shape == (4, 4) and out.s0.shape == (3,)
    np.testing.assert_array_equal(out.targets, vocab.encode("ello"))
    # the inputs x(t) are constant nodes named x(t), made inside their step
    a1 = out.preactivations[0]
    x_nodes = [q for n in _walk(a1) for q in n.parents if q.name == "x(1)"]
    assert x_nodes and not x_nodes[0].requires_grad and x_nodes[0].step == 1
    for P in model.parameters():
        assert [c.name for c in out.tape.copies(P)] == [f"{P.name}({t})" for t in range(1, T + 1)]
    L.backward()
    assert out.tape.parameters == model.parameters()


def _walk(root):
    seen, todo, out = set(), [root], []
    while todo:
        n = todo.pop()
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
            todo.extend(n.parents)
    return out


def test_forward_without_targets_and_module_call():
    model = nn.RNN(2, 3, 2, seed=0)
    xs = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    out = model(xs)
    assert out.losses == [] and out.targets is None and len(out.logits) == 5
    assert out.logits[0].shape == (2,) and out.states[-1].shape == (3,)
    out_t = model.forward(Tensor(xs))
    np.testing.assert_array_equal(out_t.logits[-1].data, out.logits[-1].data)


def test_initialisation_like_pytorch():
    model = nn.RNN(3, 16, 5, seed=7)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["U", "W", "b", "V", "c"]
    shapes = [P.shape for P in model.parameters()]
    assert shapes == [(3, 16), (16, 16), (16,), (16, 5), (5,)]
    for P in model.parameters():
        assert np.abs(P.data).max() <= 1 / 4 and P.name in names and P.dtype == np.float32
    again = nn.RNN(3, 16, 5, seed=7)
    for P, Q in zip(model.parameters(), again.parameters()):
        np.testing.assert_array_equal(P.data, Q.data)
    model.zero_grad()
    assert all(P.grad is None for P in model.parameters())


def test_bad_inputs_are_clear_errors():
    model = nn.RNN(2, 3, 4, seed=0)
    with pytest.raises(ValueError, match=r"RNN.*\(T, B, 2\)"):
        model.forward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"RNN.*s0.*\(3,\)"):
        model.forward(np.zeros((5, 2)), s0=np.zeros(4))
    with pytest.raises(ValueError, match=r"RNN.loss.*targets.*\(5,\)"):
        model.loss(np.zeros((5, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(2, 3, 4, nonlinearity="softsign")  # (relu is accepted now, as torch.nn.RNN)


def test_hello_example_trains_to_ello():
    model, xs, targets, vocab = hello_example(hidden=3, seed=0)
    assert vocab.tokens == list("helo") and vocab.decode(targets) == "ello"
    for _ in range(300):
        L, out = model.loss(xs, targets)
        L.backward()
        for P in model.parameters():
            P.data -= 0.5 * P.grad
            P.grad = None
    assert vocab.decode(np.argmax([y.data for y in out.logits], axis=-1)) == "ello"


def test_char_vocab():
    v = CharVocab(["d", "e", "p", "<stop>"])
    np.testing.assert_array_equal(v.encode(["d", "e", "e", "p", "<stop>"]), [0, 1, 1, 2, 3])
    assert v.decode([0, 1, 2, 3]) == "dep<stop>"
    np.testing.assert_array_equal(v.one_hot("de"), [[1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match="'x' at position 1"):
        v.encode("dx")
