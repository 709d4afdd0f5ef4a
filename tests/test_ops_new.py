"""The ops recurrent models need (issue 13), each against torch (values, gradients and dtypes, float32) and
against float64 finite differences (conftest's independent checker), including broadcasting."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, nn, ops
from tinygrad_rnn.errors import ShapeError

MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])
INDEX = np.array([[0, 2, 2, 1], [1, 0, 0, 0]])

# (id, ours on Tensors, theirs on torch tensors, input shapes, input domain)
CASES = [
    ("sqrt", lambda a: a.sqrt(), lambda a: a.sqrt(), [(3, 4)], "positive"),
    ("rsqrt", lambda a: a.rsqrt(), lambda a: a.rsqrt(), [(3, 4)], "positive"),
    ("abs", lambda a: abs(a), lambda a: abs(a), [(3, 4)], "normal"),
    ("sin", lambda a: a.sin(), lambda a: a.sin(), [(3, 4)], "normal"),
    ("cos", lambda a: a.cos(), lambda a: a.cos(), [(3, 4)], "normal"),
    ("clamp", lambda a: a.clamp(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [(3, 4)], "normal"),
    ("clamp_min", lambda a: a.clamp(min=0.1), lambda a: a.clamp(min=0.1), [(3, 4)], "normal"),
    ("clip_max", lambda a: a.clip(max=0.2), lambda a: a.clip(max=0.2), [(3, 4)], "normal"),
    ("maximum", lambda a, b: ops.maximum(a, b), torch.maximum, [(3, 4), (4,)], "normal"),
    ("minimum", lambda a, b: a.minimum(b), torch.minimum, [(3, 1), (1, 4)], "normal"),
    ("min", lambda a: a.min(), lambda a: a.min(), [(3, 4)], "normal"),
    ("min_axis", lambda a: a.min(1), lambda a: a.min(1).values, [(3, 4)], "normal"),
    ("var", lambda a: a.var(), lambda a: a.var(), [(3, 4)], "normal"),
    ("var_axis", lambda a: a.var(0, keepdims=True), lambda a: a.var(0, keepdim=True), [(3, 4)], "normal"),
    ("var_biased", lambda a: a.var(1, correction=0), lambda a: a.var(1, correction=0), [(3, 4)], "normal"),
    ("std", lambda a: a.std(1), lambda a: a.std(1), [(3, 4)], "normal"),
    ("logsumexp", lambda a: a.logsumexp(1), lambda a: a.logsumexp(1), [(3, 4)], "normal"),
    ("logsumexp_all", lambda a: a.logsumexp(), lambda a: a.logsumexp((0, 1)), [(3, 4)], "normal"),
    ("logsumexp_keep", lambda a: a.logsumexp(0, keepdims=True), lambda a: a.logsumexp(0, keepdim=True),
     [(3, 4)], "normal"),
    ("softplus", lambda a: F.softplus(a), TF.softplus, [(3, 4)], "normal"),
    ("softplus_beta", lambda a: F.softplus(a * 10, beta=2.0), lambda a: TF.softplus(a * 10, beta=2.0),
     [(3, 4)], "normal"),
    ("logsigmoid", lambda a: F.logsigmoid(a * 10), lambda a: TF.logsigmoid(a * 10), [(3, 4)], "normal"),
    ("gelu", lambda a: F.gelu(a), TF.gelu, [(3, 4)], "normal"),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh"),
     [(3, 4)], "normal"),
    ("silu", lambda a: F.silu(a), TF.silu, [(3, 4)], "normal"),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.1), lambda a: TF.leaky_relu(a, 0.1), [(3, 4)], "normal"),
    ("where", lambda a, b: ops.where(MASK, a, b), lambda a, b: torch.where(torch.tensor(MASK), a, b),
     [(3, 4), (4,)], "normal"),
    ("where_number", lambda a: F.where(Tensor(MASK), a, 0.0), lambda a: torch.where(torch.tensor(MASK), a, 0.0),
     [(3, 4)], "normal"),
    ("where_method", lambda a, b: a.where(Tensor(MASK), b), lambda a, b: a.where(torch.tensor(MASK), b),
     [(3, 4), (3, 4)], "normal"),
    ("masked_fill", lambda a: a.masked_fill(MASK[0], -1.0), lambda a: a.masked_fill(torch.tensor(MASK[0]), -1.0),
     [(3, 4)], "normal"),
    ("cumsum", lambda a: a.cumsum(1), lambda a: a.cumsum(1), [(3, 4)], "normal"),
    ("cumsum_0", lambda a: a.cumsum(0), lambda a: a.cumsum(0), [(3, 4)], "normal"),
    ("flip", lambda a: a.flip(0), lambda a: a.flip(0), [(3, 4)], "normal"),
    ("flip_both", lambda a: a.flip((0, -1)), lambda a: a.flip((0, -1)), [(3, 4)], "normal"),
    ("repeat", lambda a: a.repeat(2, 3), lambda a: a.repeat(2, 3), [(3, 4)], "normal"),
    ("repeat_lead", lambda a: a.repeat(2, 1, 2), lambda a: a.repeat(2, 1, 2), [(3, 4)], "normal"),
    ("pad", lambda a: F.pad(a, (1, 2)), lambda a: TF.pad(a, (1, 2)), [(3, 4)], "normal"),
    ("pad_2d", lambda a: F.pad(a, (0, 1, 2, 0), value=0.5), lambda a: TF.pad(a, (0, 1, 2, 0), value=0.5),
     [(3, 4)], "normal"),
    ("gather", lambda a: a.gather(0, INDEX), lambda a: a.gather(0, torch.tensor(INDEX)), [(3, 4)], "normal"),
    ("gather_1", lambda a: a.gather(1, INDEX), lambda a: a.gather(1, torch.tensor(INDEX)), [(3, 4)], "normal"),
    ("pow_tensor", lambda a, b: a.pow(b), torch.pow, [(3, 4), (4,)], "positive"),
    ("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(3, 4)], "normal"),
    ("tensor_exponent_0d", lambda a, b: a.pow(b), torch.pow, [(3, 4), ()], "positive"),
]


def _inputs(shapes, domain, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s) for s in shapes]
    return [np.abs(x) + 0.5 for x in xs] if domain == "positive" else xs


@pytest.mark.parametrize("name,ours,theirs,shapes,domain", CASES, ids=[c[0] for c in CASES])
def test_new_op_matches_torch_in_float32(name, ours, theirs, shapes, domain):
    xs = [x.astype(np.float32) for x in _inputs(shapes, domain)]
    params = [Parameter(x) for x in xs]
    out = ours(*params)
    refs = [torch.tensor(x, requires_grad=True) for x in xs]
    expected = theirs(*refs)
    assert out.dtype == np.float32 and str(expected.dtype) == "torch.float32"
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    weights = np.random.default_rng(9).standard_normal(out.shape).astype(np.float32)
    (out * Tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    for p, r in zip(params, refs):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, r.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,ours,theirs,shapes,domain", CASES, ids=[c[0] for c in CASES])
def test_new_op_matches_finite_differences_in_float64(name, ours, theirs, shapes, domain, numerical_grad,
                                                      engine_grads):
    xs = _inputs(shapes, domain, seed=1)
    for ours_grad, numeric in zip(engine_grads(ours, xs), numerical_grad(ours, xs)):
        np.testing.assert_allclose(ours_grad, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,ours,theirs,shapes,domain", CASES, ids=[c[0] for c in CASES])
def test_new_op_keeps_float64_like_torch(name, ours, theirs, shapes, domain):
    xs = _inputs(shapes, domain, seed=2)
    params = [Parameter(x) for x in xs]
    out, expected = ours(*params), theirs(*[torch.tensor(x, requires_grad=True) for x in xs])
    assert out.dtype == np.float64 and str(expected.dtype) == "torch.float64"
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert all(p.grad.dtype == np.float64 for p in params)


def test_ops_on_integer_data_compute_in_float32_like_torch():
    ints = np.array([1, 4, 9])
    for ours, theirs in [(lambda a: a.sqrt(), torch.sqrt), (lambda a: a.sin(), torch.sin),
                         (lambda a: F.softplus(a), TF.softplus), (lambda a: a.logsumexp(0), lambda a: a.logsumexp(0)),
                         (lambda a: 2 ** a, lambda a: 2 ** a), (lambda a: a ** 0.5, lambda a: a ** 0.5)]:
        expected = theirs(torch.tensor(ints).float() if theirs is TF.softplus else torch.tensor(ints))
        out = ours(Tensor(ints))
        assert str(out.dtype) == str(expected.dtype).replace("torch.", ""), ours
        np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-6)


def test_ties_split_the_gradient_like_torch():
    for ours, theirs in [(ops.maximum, torch.maximum), (ops.minimum, torch.minimum)]:
        a, b = Parameter(np.array([1.0, 2.0, 3.0])), Parameter(np.array([1.0, 0.0, 5.0]))
        ours(a, b).sum().backward()
        ta, tb = torch.tensor(a.data, requires_grad=True), torch.tensor(b.data, requires_grad=True)
        theirs(ta, tb).sum().backward()
        np.testing.assert_array_equal(a.grad, ta.grad.numpy())
        np.testing.assert_array_equal(b.grad, tb.grad.numpy())
    x = Parameter(np.array([0.0, 1.0, -1.0]))
    (abs(x).sum() + x.clamp(0.0, 1.0).sum()).backward()
    tx = torch.tensor(x.data, requires_grad=True)
    (abs(tx).sum() + tx.clamp(0.0, 1.0).sum()).backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())


def test_masking_a_padded_step_cuts_its_gradient():
    """The reason for where/masked_fill: a padded step contributes no loss and receives no gradient."""
    h = Parameter(np.arange(6.0).reshape(3, 2))  # (T=3, B=2)
    real = np.array([[True, True], [True, False], [False, False]])
    ops.where(real, h, 0.0).sum().backward()
    np.testing.assert_array_equal(h.grad, real.astype(float))


# --- losses -----------------------------------------------------------------------------------------

def _ce_pair(logits, targets, **kwargs):
    """Our loss on (T, B, k) logits in torch's layout (classes on axis 1) and torch's, values and grads."""
    z = Parameter(logits)
    ours = F.cross_entropy(z.permute(1, 2, 0), targets, **kwargs)
    tz = torch.tensor(logits, requires_grad=True)
    theirs = TF.cross_entropy(tz.permute(1, 2, 0), torch.tensor(targets), **kwargs)
    weights = np.random.default_rng(5).standard_normal(ours.shape).astype(logits.dtype)
    (ours * Tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    return ours, theirs, z.grad, tz.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore,smoothing", [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.1)])
def test_cross_entropy_over_time_batch_classes_with_ignore_index_and_smoothing(reduction, ignore, smoothing):
    rng = np.random.default_rng(0)
    T, B, k = 4, 3, 5
    logits = rng.standard_normal((T, B, k)).astype(np.float32)
    targets = rng.integers(0, k, (B, T))
    if ignore:
        targets[1, 2:] = -100  # sequence 1 is padded after two steps
    ours, theirs, grad, expected = _ce_pair(logits, targets, reduction=reduction, label_smoothing=smoothing)
    assert ours.dtype == np.float32 and ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    if ignore:
        assert not grad[2:, 1].any()  # padded steps receive no gradient


def test_cross_entropy_with_probability_targets_and_custom_ignore_index():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    probs = rng.dirichlet(np.ones(4), 6).astype(np.float32)
    for kwargs in ({}, {"label_smoothing": 0.3}, {"reduction": "none"}):
        z, tz = Parameter(logits), torch.tensor(logits, requires_grad=True)
        ours, theirs = F.cross_entropy(z, probs, **kwargs), TF.cross_entropy(tz, torch.tensor(probs), **kwargs)
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5)
        ours.sum().backward()
        theirs.sum().backward()
        np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)
    targets = np.array([0, 3, 2, 3, 1, 0])
    z, tz = Parameter(logits), torch.tensor(logits, requires_grad=True)
    F.cross_entropy(z, targets, ignore_index=3).backward()
    TF.cross_entropy(tz, torch.tensor(targets), ignore_index=3).backward()
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_general_path_matches_finite_differences(numerical_grad, engine_grads):
    targets = np.array([[0, 2, -100], [1, -100, 3]])  # (N=2, d=3), classes on axis 1 of (2, 4, 3)
    fn = lambda z: F.cross_entropy(z, targets, label_smoothing=0.1)  # noqa: E731
    x = [np.random.default_rng(2).standard_normal((2, 4, 3))]
    np.testing.assert_allclose(engine_grads(fn, x)[0], numerical_grad(fn, x)[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(reduction):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 5, 2)).astype(np.float32)  # (N, k, d)
    targets = np.array([[1, 4], [-100, 0], [2, 2]])
    z, tz = Parameter(logits), torch.tensor(logits, requires_grad=True)
    ours = F.nll_loss(z.log_softmax(1), targets, reduction=reduction)
    theirs = TF.nll_loss(tz.log_softmax(1), torch.tensor(targets), reduction=reduction)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_finite_differences_with_ignored_targets(reduction, numerical_grad, engine_grads):
    targets = np.array([[1, 4], [-100, 0], [2, -100]])  # (N=3, d=2), classes on axis 1 of (3, 5, 2)
    fn = lambda z: F.nll_loss(z.log_softmax(1), targets, reduction=reduction)  # noqa: E731
    x = [np.random.default_rng(5).standard_normal((3, 5, 2))]
    grad = engine_grads(fn, x)[0]
    np.testing.assert_allclose(grad, numerical_grad(fn, x)[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grad[1, :, 0], 0)  # an ignored target sends nothing back


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, np.array([1.0, 3.0, 0.5], np.float32)])
def test_binary_cross_entropy_with_logits_matches_torch(reduction, pos_weight, numerical_grad, engine_grads):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((4, 3)) * 30).astype(np.float32)  # saturated: still finite
    targets = rng.uniform(0, 1, (4, 3)).astype(np.float32)
    z, tz = Parameter(logits), torch.tensor(logits, requires_grad=True)
    ours = F.binary_cross_entropy_with_logits(z, targets, reduction, pos_weight)
    theirs = TF.binary_cross_entropy_with_logits(tz, torch.tensor(targets), reduction=reduction,
                                                 pos_weight=None if pos_weight is None else torch.tensor(pos_weight))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)
    fn = lambda a: F.binary_cross_entropy_with_logits(a, targets, reduction, pos_weight)  # noqa: E731
    x = [rng.standard_normal((4, 3))]
    np.testing.assert_allclose(engine_grads(fn, x)[0], numerical_grad(fn, x)[0], rtol=1e-5, atol=1e-7)


def test_bad_input_names_the_op():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="gather"):
        x.gather(0, np.zeros((3,), int))
    with pytest.raises(ShapeError, match="pad"):
        F.pad(x, (1,))
    with pytest.raises(ShapeError, match="where"):
        ops.where(np.ones(5, bool), x, 0.0)
    with pytest.raises(TypeError, match="masked_fill.*boolean"):
        x.masked_fill(np.ones(4), 0.0)
    with pytest.raises(ShapeError, match="repeat"):
        x.repeat(2)
    with pytest.raises(ValueError, match="cross_entropy.*label_smoothing"):
        F.cross_entropy(x, np.zeros(3, int), label_smoothing=2.0)


def test_rnn_cell_with_relu_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.RNNCell(3, 4, nonlinearity="relu", dtype=torch.float64)
    cell = nn.RNNCell(3, 4, nonlinearity="relu", dtype=np.float64).load_torch(ref)
    x = np.random.default_rng(0).standard_normal((2, 3))
    h = cell(Tensor(x))
    expected = ref(torch.tensor(x))
    np.testing.assert_allclose(h.data, expected.detach().numpy(), rtol=1e-12)
    h.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(cell.U.grad, ref.weight_ih.grad.numpy().T, rtol=1e-12)
    assert cell.to_torch().nonlinearity == "relu"
