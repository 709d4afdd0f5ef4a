"""The engine against PyTorch autograd with the same values: every op, random op graphs (forward and backward),
the losses, and the lecture RNN (torch.nn.RNN for tanh, a hand-written torch loop for both nonlinearities),
batched (T, B, n) and unbatched (T, n). Skipped when torch is not installed."""
import numpy as np
import pytest

import tinygrad_rnn.functional as F
from tinygrad_rnn import Parameter, Tensor, concat, nn, stack

torch = pytest.importorskip("torch")
torch_F = pytest.importorskip("torch.nn.functional")


def both(arrays):
    """The same float64 values as engine Parameters and torch leaves."""
    ours = [Parameter(np.array(a, dtype=np.float64)) for a in arrays]
    theirs = [torch.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    return ours, theirs


def assert_same(ours, theirs, out_ours, out_theirs, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(out_ours.data, out_theirs.detach().numpy(), rtol=rtol, atol=atol)
    w = np.random.default_rng(99).standard_normal(out_ours.shape)
    (out_ours * Tensor(w)).sum().backward()
    (out_theirs * torch.tensor(w)).sum().backward()
    for i, (p, q) in enumerate(zip(ours, theirs)):
        expected = np.zeros(p.shape) if q.grad is None else q.grad.numpy()
        got = np.zeros(p.shape) if p.grad is None else p.grad
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=f"input {i}")


# --- every op -----------------------------------------------------------------------------------------

IDX = np.array([2, 0, 2, 2])
OPS = [  # (name, engine fn, torch fn, input shapes, positive inputs?)
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (1, 4)], False),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [(3, 1), (4,)], False),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 4)], False),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (3, 1)], True),
    ("rsub", lambda a: 2.0 - a, lambda a: 2.0 - a, [(3, 4)], False),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a, [(3, 4)], True),
    ("neg", lambda a: -a, lambda a: -a, [(3, 4)], False),
    ("pow3", lambda a: a ** 3, lambda a: a ** 3, [(3, 4)], False),
    ("pow_half", lambda a: a ** 0.5, lambda a: a ** 0.5, [(3, 4)], True),
    ("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 2)], False),
    ("matmul_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 2)], False),
    ("matmul_dot", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)], False),
    ("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)], False),
    ("matmul_broadcast", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)], False),
    ("sum", lambda a: a.sum(), lambda a: a.sum(), [(3, 4)], False),
    ("sum_axis", lambda a: a.sum(axis=0), lambda a: a.sum(dim=0), [(3, 4)], False),
    ("sum_keep", lambda a: a.sum(axis=(0, 2), keepdims=True), lambda a: a.sum(dim=(0, 2), keepdim=True),
     [(2, 3, 4)], False),
    ("mean", lambda a: a.mean(), lambda a: a.mean(), [(3, 4)], False),
    ("mean_axis", lambda a: a.mean(axis=-1, keepdims=True), lambda a: a.mean(dim=-1, keepdim=True), [(3, 4)],
     False),
    ("max", lambda a: a.max(), lambda a: a.amax(), [(3, 4)], False),
    ("max_axis", lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(3, 4)], False),
    ("exp", lambda a: a.exp(), lambda a: a.exp(), [(3, 4)], False),
    ("log", lambda a: a.log(), lambda a: a.log(), [(3, 4)], True),
    ("tanh", lambda a: a.tanh(), lambda a: a.tanh(), [(3, 4)], False),
    ("sigmoid", lambda a: a.sigmoid(), lambda a: a.sigmoid(), [(3, 4)], False),
    ("relu", lambda a: a.relu(), lambda a: a.relu(), [(3, 4)], False),
    ("softmax", lambda a: a.softmax(axis=0), lambda a: a.softmax(dim=0), [(3, 4)], False),
    ("log_softmax", lambda a: a.log_softmax(), lambda a: a.log_softmax(dim=-1), [(3, 4)], False),
    ("reshape", lambda a: a.reshape(2, 6), lambda a: a.reshape(2, 6), [(3, 4)], False),
    ("T", lambda a: a.T, lambda a: a.T, [(3, 4)], False),
    ("transpose", lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)], False),
    ("transpose_negative", lambda a: a.transpose(-1, 0, 1), lambda a: a.permute(-1, 0, 1), [(2, 3, 4)], False),
    ("getitem", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [(3, 4)], False),
    ("getitem_mask", lambda a: a[a.data > 0], lambda a: a[a > 0], [(3, 4)], False),
    ("getitem_repeated", lambda a: a[IDX], lambda a: a[torch.tensor(IDX)], [(3, 4)], False),
    ("getitem_pairs", lambda a: a[IDX, IDX], lambda a: a[torch.tensor(IDX), torch.tensor(IDX)], [(3, 4)], False),
    ("stack", lambda a, b: stack([a, b, a], axis=1), lambda a, b: torch.stack([a, b, a], dim=1),
     [(3, 4), (3, 4)], False),
    ("concat", lambda a, b: concat([a, b], axis=1), lambda a, b: torch.cat([a, b], dim=1), [(3, 4), (3, 2)], False),
]


@pytest.mark.parametrize("name,ours_fn,torch_fn,shapes,positive", OPS, ids=[o[0] for o in OPS])
def test_op_matches_torch(name, ours_fn, torch_fn, shapes, positive):
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(0.5, 2.0, s) if positive else rng.standard_normal(s) for s in shapes]
    ours, theirs = both(arrays)
    assert_same(ours, theirs, ours_fn(*ours), torch_fn(*theirs))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (4,)], ids=str)
def test_cross_entropy_matches_torch(shape, reduction):
    rng = np.random.default_rng(1)
    z = rng.standard_normal(shape) * 3
    t = rng.integers(0, shape[-1], size=shape[:-1])
    ours, theirs = both([z])
    assert_same(ours, theirs, F.cross_entropy(ours[0], t, reduction=reduction),
                torch_F.cross_entropy(theirs[0], torch.tensor(t), reduction=reduction))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_matches_torch(reduction):
    rng = np.random.default_rng(2)
    p, t = rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))
    ours, theirs = both([p])
    assert_same(ours, theirs, F.binary_cross_entropy(ours[0], t, reduction=reduction),
                torch_F.binary_cross_entropy(theirs[0], torch.tensor(t), reduction=reduction))


# --- random op graphs -------------------------------------------------------------------------------------

# (name, arity, engine, torch): unary/binary ops on any shapes (binary ones need broadcastable shapes)
ELEMENTWISE = [
    ("add", 2, lambda a, b: a + b, lambda a, b: a + b),
    ("sub", 2, lambda a, b: a - b, lambda a, b: a - b),
    ("mul", 2, lambda a, b: a * b, lambda a, b: a * b),
    ("div", 2, lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    ("tanh", 1, lambda a: a.tanh(), lambda a: a.tanh()),
    ("sigmoid", 1, lambda a: a.sigmoid(), lambda a: a.sigmoid()),
    ("exp", 1, lambda a: a.tanh().exp(), lambda a: a.tanh().exp()),
    ("log", 1, lambda a: (a * a + 0.5).log(), lambda a: (a * a + 0.5).log()),
    ("relu", 1, lambda a: a.relu(), lambda a: a.relu()),
    ("square", 1, lambda a: a ** 2, lambda a: a ** 2),
    ("affine", 1, lambda a: 1.5 - 0.5 * a, lambda a: 1.5 - 0.5 * a),
    ("softmax", 1, lambda a: a.softmax(axis=-1), lambda a: a.softmax(dim=-1)),
    ("log_softmax", 1, lambda a: a.log_softmax(axis=-1), lambda a: a.log_softmax(dim=-1)),
]
INPUT_SHAPES = [(3, 4), (4,), (1, 4), (3, 1), (), (2, 3, 4)]


def random_program(seed, n_ops=12):
    """Instructions over a pool of values: ("op", name, operand indices, parameters)."""
    rng = np.random.default_rng(seed)
    n_inputs = int(rng.integers(2, 4))
    shapes = [INPUT_SHAPES[i] for i in rng.choice(len(INPUT_SHAPES), n_inputs, replace=False)]
    pool = list(shapes)
    program = []
    while len(program) < n_ops:
        kind = rng.choice(["elementwise", "elementwise", "elementwise", "reduce", "matmul", "shape", "index"])
        i = int(rng.integers(len(pool)))
        a = pool[i]
        if kind == "elementwise":
            name, arity, _, _ = ELEMENTWISE[rng.integers(len(ELEMENTWISE))]
            if arity == 2:
                j = int(rng.integers(len(pool)))
                try:
                    shape = np.broadcast_shapes(a, pool[j])
                except ValueError:
                    continue
                program.append(("elementwise", name, (i, j), None))
            else:
                program.append(("elementwise", name, (i,), None))
                shape = a
        elif kind == "reduce":
            if not a:
                continue
            op = str(rng.choice(["sum", "mean", "max"]))
            axis = int(rng.integers(-len(a), len(a)))
            keep = bool(rng.integers(2))
            program.append(("reduce", op, (i,), (axis, keep)))
            shape = np.zeros(a).sum(axis=axis, keepdims=keep).shape
        elif kind == "matmul":
            j = int(rng.integers(len(pool)))
            b = pool[j]
            if not a or not b:
                continue
            transpose = len(b) >= 2 and a[-1] != b[-2 if len(b) >= 2 else 0]
            bt = b[:-2] + (b[-1], b[-2]) if transpose else b
            try:
                shape = np.matmul(np.zeros(a), np.zeros(bt)).shape
            except ValueError:
                continue
            program.append(("matmul", "matmul", (i, j), transpose))
        elif kind == "shape":
            if len(a) < 2:
                program.append(("shape", "reshape", (i,), (-1,)))
                shape = (int(np.prod(a)),)
            elif rng.integers(2):
                program.append(("shape", "T", (i,), None))
                shape = a[::-1]
            else:
                program.append(("shape", "reshape", (i,), (a[0], -1)))
                shape = (a[0], int(np.prod(a[1:])))
        else:  # integer-array indexing with repeats along the first axis, or stacking two same-shape values
            if a and rng.integers(2):
                idx = rng.integers(0, a[0], size=int(rng.integers(1, 5)))
                program.append(("index", "getitem", (i,), idx))
                shape = (len(idx),) + a[1:]
            else:
                same = [j for j, s in enumerate(pool) if s == a]
                j = int(rng.choice(same))
                program.append(("index", "stack", (i, j), None))
                shape = (2,) + a
        pool.append(shape)
    return shapes, program


def run_program(program, inputs, engine):
    """Replay the instructions on engine Tensors (engine=True) or torch tensors; return a scalar."""
    pool = list(inputs)
    for kind, name, args, param in program:
        xs = [pool[k] for k in args]
        if kind == "elementwise":
            fns = {n: (e, t) for n, _, e, t in ELEMENTWISE}[name]
            out = (fns[0] if engine else fns[1])(*xs)
        elif kind == "reduce":
            axis, keep = param
            if engine:
                out = getattr(xs[0], name)(axis=axis, keepdims=keep)
            else:
                out = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name](xs[0], dim=axis, keepdim=keep)
        elif kind == "matmul":
            b = xs[1]
            if param:
                b = b.transpose(*range(b.ndim - 2), b.ndim - 1, b.ndim - 2) if engine else b.transpose(-1, -2)
            out = xs[0] @ b
        elif kind == "shape":
            if name == "T":
                out = xs[0].T if engine else xs[0].permute(*reversed(range(xs[0].ndim)))
            else:
                out = xs[0].reshape(*param)
        elif name == "getitem":
            out = xs[0][param] if engine else xs[0][torch.tensor(param)]
        else:
            out = stack(xs) if engine else torch.stack(xs)
        pool.append(out)
    # every value feeds the output (fan-out everywhere), each with its own fixed weights
    total = None
    for k, v in enumerate(pool[len(inputs):]):
        w = np.random.default_rng(1000 + k).standard_normal(tuple(v.shape))
        term = (v * (Tensor(w) if engine else torch.tensor(w))).sum()
        total = term if total is None else total + term
    return total


@pytest.mark.parametrize("seed", range(40))
def test_random_graph_matches_torch(seed):
    shapes, program = random_program(seed)
    rng = np.random.default_rng(seed + 10_000)
    arrays = [rng.standard_normal(s) + 0.01 * np.arange(int(np.prod(s))).reshape(s) for s in shapes]
    ours, theirs = both(arrays)
    out_ours = run_program(program, ours, engine=True)
    out_theirs = run_program(program, theirs, engine=False)
    np.testing.assert_allclose(out_ours.item(), out_theirs.item(), rtol=1e-10)
    out_ours.backward()
    out_theirs.backward()
    for i, (p, q) in enumerate(zip(ours, theirs)):
        expected = np.zeros(p.shape) if q.grad is None else q.grad.numpy()
        got = np.zeros(p.shape) if p.grad is None else p.grad
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11, err_msg=f"input {i}: {program}")


# --- the lecture RNN ---------------------------------------------------------------------------------------


def torch_lecture_loss(model, xs, targets, s0=None):
    """The same network in plain torch ops (any nonlinearity); returns loss and torch leaves by name."""
    leaves = {name: torch.tensor(P.data.astype(np.float64), requires_grad=True)
              for name, P in model.named_parameters()}
    U, W, b, V, c = (leaves[k] for k in "UWbVc")
    sigma = torch.tanh if model.nonlinearity == "tanh" else torch.sigmoid
    s = torch.zeros(xs.shape[1:-1] + (W.shape[0],), dtype=torch.float64) if s0 is None else torch.tensor(s0)
    L = 0
    for t in range(len(xs)):
        s = sigma(torch.tensor(xs[t]) @ U + s @ W + b)
        y = s @ V + c
        L = L + torch_F.cross_entropy(y if y.ndim == 2 else y[None], torch.tensor(np.atleast_1d(targets[t])),
                                      reduction="sum")
    return L, leaves


def _rnn_data(T, B, n, k, seed):
    rng = np.random.default_rng(seed)
    shape = (T, n) if B is None else (T, B, n)
    return rng.standard_normal(shape), rng.integers(0, k, size=shape[:-1])


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid"])
@pytest.mark.parametrize("B", [None, 3])
def test_lecture_rnn_matches_torch_autograd(nonlinearity, B):
    model = nn.RNN(3, 5, 4, nonlinearity=nonlinearity, seed=11, dtype=np.float64)
    xs, targets = _rnn_data(7, B, 3, 4, seed=12)
    L, out = model.loss(xs, targets)
    L.backward()
    L_t, leaves = torch_lecture_loss(model, xs, targets)
    L_t.backward()
    np.testing.assert_allclose(L.item(), L_t.item(), rtol=1e-12)
    for name, P in model.named_parameters():
        np.testing.assert_allclose(P.grad, leaves[name].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(out.tape.step_grads(P).sum(0), leaves[name].grad.numpy(), rtol=1e-10,
                                   atol=1e-13, err_msg=name)


@pytest.mark.parametrize("B", [None, 2])
def test_lecture_rnn_matches_torch_nn_rnn(B):
    """torch.nn.RNN computes h_t = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh): W_ih = Uᵀ, W_hh = Wᵀ, b_ih = b."""
    n, d, k, T = 3, 4, 5, 6
    model = nn.RNN(n, d, k, seed=3)  # float32, as torch's default
    xs, targets = _rnn_data(T, B, n, k, seed=4)
    xs = xs.astype(np.float32)
    L, out = model.loss(xs, targets)
    L.backward()

    rnn = torch.nn.RNN(n, d, nonlinearity="tanh")
    head = torch.nn.Linear(d, k)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(model.U.data.T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(model.W.data.T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(model.b.data))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(model.V.data.T.copy()))
        head.bias.copy_(torch.from_numpy(model.c.data))
    states, _ = rnn(torch.from_numpy(xs))  # (T, B, d) or (T, d)
    logits = head(states)
    L_t = torch_F.cross_entropy(logits.reshape(-1, k), torch.from_numpy(targets.reshape(-1)), reduction="sum")
    L_t.backward()

    np.testing.assert_allclose(L.item(), L_t.item(), rtol=1e-5)
    for t in range(T):
        np.testing.assert_allclose(out.states[t + 1].data, states[t].detach().numpy(), rtol=1e-5, atol=1e-6)
    pairs = {"U": rnn.weight_ih_l0.grad.T, "W": rnn.weight_hh_l0.grad.T, "b": rnn.bias_ih_l0.grad,
             "V": head.weight.grad.T, "c": head.bias.grad}
    for name, P in model.named_parameters():
        np.testing.assert_allclose(P.grad, pairs[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(model.b.grad, rnn.bias_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_per_step_copy_gradients_match_torch_per_step_leaves():
    """torch with an explicit leaf W_t per step (W_t = W + 0·δ_t): ∂L/∂W_t equals the copy's .grad."""
    model = nn.RNN(2, 3, 3, seed=8, dtype=np.float64)
    xs, targets = _rnn_data(5, 2, 2, 3, seed=9)
    L, out = model.loss(xs, targets)
    L.backward()
    U, W, b, V, c = (torch.tensor(P.data) for P in model.parameters())
    Ws = [W.clone().requires_grad_(True) for _ in range(5)]
    s = torch.zeros(2, 3, dtype=torch.float64)
    L_t = 0
    for t in range(5):
        s = torch.tanh(torch.tensor(xs[t]) @ U + s @ Ws[t] + b)
        L_t = L_t + torch_F.cross_entropy(s @ V + c, torch.tensor(targets[t]), reduction="sum")
    L_t.backward()
    expected = np.stack([w.grad.numpy() for w in Ws])
    np.testing.assert_allclose(out.tape.step_grads(model.W), expected, rtol=1e-10, atol=1e-13)
