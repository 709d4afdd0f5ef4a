"""BPTT analysis against the lecture formulas, the engine's own gradients and finite differences (float64)."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, nn
from tinygrad_rnn.analysis import (all_state_jacobians, contribution_norms, contributions, explicit_grad,
                                   gradient_flow, hello_sequence, jacobian, state_jacobian, step_jacobian, vjp)
from tinygrad_rnn.analysis.flow import fit_rate, verdict_for

EPS = 1e-6


def small_network(nonlinearity="tanh", T=5, B=None, d=3, seed=1):
    """A float64 RNN (n = 4, d, k = 4) on random one-hot inputs, with losses; weights scaled up a little
    so that every Jacobian is far from zero."""
    rng = np.random.default_rng(seed)
    model = nn.RNN(4, d, 4, nonlinearity=nonlinearity, seed=seed, dtype=np.float64)
    for p in model.parameters():
        p.data = p.data * 2
    shape = (T,) if B is None else (T, B)
    xs = np.eye(4)[rng.integers(0, 4, size=shape)]
    targets = rng.integers(0, 4, size=shape)
    s0 = rng.uniform(-0.5, 0.5, size=shape[1:] + (d,))  # a nonzero s0 makes ∂L/∂W(1) nonzero too
    return model, xs, targets, s0


def states_from(model, xs, s_k, k, t):
    """s_t as an array, running steps k+1..t from s_k (numpy only: the finite-difference side)."""
    act = np.tanh if model.nonlinearity == "tanh" else (lambda a: 1 / (1 + np.exp(-a)))
    s = s_k
    for x in xs[k:t]:
        s = act(x @ model.U.data + s @ model.W.data + model.b.data)
    return s


def sigma_prime(model, a):
    if model.nonlinearity == "tanh":
        return 1 - np.tanh(a) ** 2
    s = 1 / (1 + np.exp(-a))
    return s * (1 - s)


def numeric_jacobian(f, x):
    J = np.zeros(np.shape(f(x)) + x.shape)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = EPS
        J[(...,) + i] = (f(x + e) - f(x - e)) / (2 * EPS)
    return J


# --- generic jacobian / vjp ---------------------------------------------------------------------

def test_jacobian_and_vjp_match_finite_differences_and_keep_grads():
    A = Parameter(np.random.default_rng(0).standard_normal((3, 4)), dtype=np.float64)
    A.grad = np.full((3, 4), 7.0)  # a gradient from some earlier backward: must survive
    fn = lambda x: (x @ A).tanh() * x.sum()  # noqa: E731
    x = np.array([0.3, -0.2, 0.5])
    J = jacobian(fn, x)
    num = numeric_jacobian(lambda v: np.tanh(v @ A.data) * v.sum(), x)
    assert J.shape == (4, 3)
    np.testing.assert_allclose(J, num, atol=1e-8)
    v = np.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(vjp(fn, x, v), v @ J, atol=1e-12)
    np.testing.assert_array_equal(A.grad, np.full((3, 4), 7.0))
    with pytest.raises(ValueError, match="vjp: v has shape"):
        vjp(fn, x, np.ones(3))


def test_jacobian_of_a_constant_function_is_zero():
    assert np.array_equal(jacobian(lambda x: Tensor(np.ones(2)), np.ones(3)), np.zeros((2, 3)))


# --- state Jacobians --------------------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
def test_step_jacobian_is_diag_sigma_prime_times_W_transposed(nonlinearity):
    model, xs, targets, s0 = small_network(nonlinearity, B=2)
    L, out = model.loss(xs, targets, s0)
    L.backward()
    for batch in (0, 1):
        for j in range(1, out.T + 1):
            a_j = out.preactivations[j - 1].data[batch]
            formula = np.diag(sigma_prime(model, a_j)) @ model.W.data.T  # the notes' diag(σ') W, row form
            J = step_jacobian(out, j, batch)
            np.testing.assert_allclose(J, formula, atol=1e-14)
            s_prev = out.states[j - 1].data[batch]
            num = numeric_jacobian(lambda s: states_from(model, xs[:, batch], s, j - 1, j), s_prev)
            np.testing.assert_allclose(J, num, atol=1e-8)


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
def test_state_jacobian_is_the_product_of_step_jacobians_and_matches_finite_differences(nonlinearity):
    model, xs, targets, s0 = small_network(nonlinearity, T=6)
    out = model.forward(xs, s0)
    all_J = all_state_jacobians(out)
    for t, k in [(6, 0), (6, 2), (4, 3), (3, 3), (5, 1)]:
        J = state_jacobian(out, t, k)
        product = np.eye(3)
        for j in range(t, k, -1):
            product = product @ step_jacobian(out, j)
        np.testing.assert_allclose(J, product, atol=1e-13)
        np.testing.assert_allclose(all_J[t, k], J, atol=1e-13)
        num = numeric_jacobian(lambda s: states_from(model, xs, s, k, t), out.states[k].data)
        np.testing.assert_allclose(J, num, atol=1e-8)
    with pytest.raises(IndexError, match="0 ≤ k ≤ t ≤ T = 6"):
        state_jacobian(out, 2, 3)
    with pytest.raises(IndexError, match="batch must be 0"):
        state_jacobian(out, 2, 1, batch=1)


# --- contributions ---------------------------------------------------------------------------------

def test_contributions_rows_columns_and_total():
    model, xs, targets, s0 = small_network(T=5, B=2)
    L, out = model.loss(xs, targets, s0)
    L.backward()
    for P in model.parameters():
        C = contributions(out, P)
        T = out.T
        assert C.shape == (T, T) + P.shape
        assert not np.any(C[np.triu_indices(T, 1)])  # L_t never reaches the copies of later steps
        np.testing.assert_allclose(C.sum(axis=0), out.tape.step_grads(P), atol=1e-13)  # columns
        np.testing.assert_allclose(C.sum(axis=(0, 1)), P.grad, atol=1e-13)              # total
    # rows: ∂L_t/∂W computed separately, by a backward of L_t alone on a fresh forward
    C = contributions(out, model.W)
    for t in range(1, out.T + 1):
        saved = model.W.grad
        model.W.grad = None
        _, again = model.loss(xs, targets, s0)
        again.losses[t - 1].backward()
        np.testing.assert_allclose(C[t - 1].sum(axis=0), model.W.grad, atol=1e-13)
        model.W.grad = saved
    # V(k) and c(k) only reach L_k: their contributions are diagonal
    CV = contributions(out, model.V)
    assert not np.any(CV[~np.eye(out.T, dtype=bool)])
    norms = contribution_norms(out, model.W)
    np.testing.assert_allclose(norms, np.linalg.norm(C, axis=(2, 3)), atol=1e-14)


def test_contributions_need_targets_and_a_model_parameter():
    model, xs, targets, s0 = small_network()
    with pytest.raises(ValueError, match="no targets"):
        contributions(model.forward(xs), model.W)
    _, out = model.loss(xs, targets)
    with pytest.raises(ValueError, match="P must be one of the model's parameters"):
        contributions(out, Parameter(np.zeros((3, 3))))


def test_analysis_never_changes_grads_and_works_after_backward():
    model, xs, targets, s0 = small_network(T=4)
    L, out = model.loss(xs, targets, s0)
    L.backward()  # frees the graph
    grads = {p: p.grad.copy() for p in model.parameters()}
    step_grads = out.tape.step_grads(model.W).copy()
    contributions(out, model.W)
    state_jacobian(out, 4, 1)
    explicit_grad(out, 2)
    gradient_flow(out)
    for p in model.parameters():
        np.testing.assert_array_equal(p.grad, grads[p])
    np.testing.assert_array_equal(out.tape.step_grads(model.W), step_grads)


# --- explicit and implicit parts ---------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
def test_explicit_grad_formula_and_total_derivative(nonlinearity):
    model, xs, targets, s0 = small_network(nonlinearity, T=4)
    out = model.forward(xs, s0)
    d = 3
    for k in range(1, out.T + 1):
        E = explicit_grad(out, k)
        a_k, s_prev = out.preactivations[k - 1].data, out.states[k - 1].data
        formula = np.zeros((d, d, d))
        for p in range(d):
            formula[p, :, p] = sigma_prime(model, a_k)[p] * s_prev  # (p, q, r): σ'(a_kp) s_{k−1,q} [r = p]
        np.testing.assert_allclose(E, formula, atol=1e-14)

    # ∂s_t/∂W = Σ_{k≤t} ∂s_t/∂s_k · ∂⁺s_k/∂W, against finite differences of s_t in W
    t = out.T
    total = sum(np.einsum("pr,rqs->pqs", state_jacobian(out, t, k), explicit_grad(out, k))
                for k in range(1, t + 1))
    W0 = model.W.data.copy()

    def s_t_of(W):
        model.W.data = W
        return states_from(model, xs, s0, 0, t)
    num = numeric_jacobian(s_t_of, W0)
    model.W.data = W0
    np.testing.assert_allclose(total, num, atol=1e-8)


# --- gradient flow ------------------------------------------------------------------------------------

def test_fit_rate_and_verdict_rule():
    gaps = np.arange(1, 8)
    assert fit_rate(gaps, 3.0 * 0.7 ** gaps) == pytest.approx(0.7)
    assert fit_rate(gaps, 0.5 * 1.3 ** gaps) == pytest.approx(1.3)
    assert fit_rate([2], [0.25]) == pytest.approx(0.5)
    assert [verdict_for(r) for r in (0.5, 0.9, 1.0, 1.1, 1.2)] == ["vanishing", "stable", "stable", "stable",
                                                                   "exploding"]


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
def test_jacobian_norms_never_exceed_the_bound(nonlinearity):
    model, xs, targets, s0 = small_network(nonlinearity, T=7)
    out = model.forward(xs, s0)
    flow = gradient_flow(out)
    assert list(flow.gaps) == list(range(1, 7))
    gamma = 1.0 if nonlinearity == "tanh" else 0.25
    lam = np.linalg.norm(model.W.data, 2)
    np.testing.assert_allclose(flow.bound, (gamma * lam) ** flow.gaps)
    assert np.all(flow.jacobian_norms <= flow.bound * (1 + 1e-12))
    for t in range(1, 8):
        for k in range(1, t):
            assert flow.norms[t, k] <= (gamma * lam) ** (t - k) * (1 + 1e-12)
    # the per-gap figure is the worst t, read from state_jacobian
    expected = max(np.linalg.norm(state_jacobian(out, k + 3, k), 2) for k in range(1, 5))
    assert flow.jacobian_norms[2] == pytest.approx(expected, rel=1e-12)


def test_scaling_W_down_vanishes_and_up_explodes():
    verdicts = {}
    for scale in (0.5, 3.0):
        model, xs, targets, _ = hello_sequence(repeats=4, hidden=16, init_scale=scale)
        assert np.linalg.norm(model.W.data, 2) == pytest.approx(scale)
        flow = gradient_flow(model.forward(xs))
        verdicts[scale] = (flow.verdict, flow.rate)
    assert verdicts[0.5][0] == "vanishing" and verdicts[0.5][1] < 0.6
    assert verdicts[3.0][0] == "exploding" and verdicts[3.0][1] > 1.15


def test_a_float32_model_is_analysed_in_float64():
    from tinygrad_rnn.demo import hello_example
    model, xs, targets, _ = hello_example(hidden=3, seed=0, dtype=np.float32)  # (T, n) inputs, no batch axis
    L, out = model.loss(xs, targets)
    L.backward()
    C = contributions(out, model.W)
    assert C.dtype == np.float64
    np.testing.assert_allclose(C.sum(axis=(0, 1)), model.W.grad, rtol=1e-5, atol=1e-6)
    assert step_jacobian(out, 2).dtype == np.float64


def test_analysis_after_an_optimizer_step_uses_the_forward_weights():
    from tinygrad_rnn import analysis as A
    from tinygrad_rnn.optim import SGD
    model, xs, targets = _review_model()
    L, out = model.loss(xs, targets)
    L.backward()
    step_grads = out.tape.step_grads(model.W).copy()
    SGD(model.parameters(), lr=1.0).step()
    np.testing.assert_allclose(A.contributions(out, model.W).sum(0), step_grads, rtol=1e-4, atol=1e-6)


def _review_model():
    from tinygrad_rnn import nn
    from tinygrad_rnn.data import CharVocab
    vocab = CharVocab("helo")
    return nn.RNN(4, 3, 4, seed=0), vocab.one_hot("hell"), vocab.encode("ello")
