"""Property tests (hypothesis): random expression graphs and random unrolled recurrent cells, whose gradients
must equal central finite differences in float64, and PyTorch's when torch is installed.

Hypothesis draws the structure (ops, operands, shapes with broadcasting, constants on either side, cells,
T, batch); a drawn seed gives the values (random normals: no exact zeros or ties at relu/max kinks).
The "ci" profile in conftest.py bounds the number of examples; HYPOTHESIS_PROFILE=thorough runs many more.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

import tinygrad_rnn.functional as F  # noqa: E402
from tinygrad_rnn import Parameter, Tensor, Unroll, concat, gradcheck, no_grad, stack  # noqa: E402

try:
    import torch
except ImportError:  # the torch comparisons are skipped, the finite-difference ones still run
    torch = None

SHAPES = [(), (4,), (3, 4), (1, 4), (3, 1), (2, 3, 4), (2, 1, 4)]
UNARY = ["tanh", "sigmoid", "exp", "log", "relu", "square", "neg", "affine", "softmax", "log_softmax", "pow"]
BINARY = ["add", "sub", "mul", "div"]


class Recorder:
    """Builds a random graph on engine tensors and records it as instructions that replay on torch."""

    def __init__(self, draw, inputs):
        self.draw, self.pool, self.program = draw, list(inputs), []

    def add(self, kind, args, param, value):
        self.program.append((kind, args, param))
        self.pool.append(value)

    def pick(self):
        return int(self.draw(st.integers(0, len(self.pool) - 1)))


def replay(kind, xs, param, engine):
    """One instruction on engine Tensors (engine=True) or torch tensors."""
    if kind == "unary":
        a = xs[0]
        name = param
        if name == "tanh":
            return a.tanh()
        if name == "sigmoid":
            return a.sigmoid()
        if name == "exp":
            return a.tanh().exp()
        if name == "log":
            return (a * a + 0.5).log()
        if name == "relu":
            return a.relu()
        if name == "square":
            return a * a
        if name == "neg":
            return -a
        if name == "affine":
            return 0.5 - a * 1.5
        if name == "pow":
            return (a * a + 1) ** 1.5
        axis = -1
        if name == "softmax":
            return a.softmax(axis) if engine else a.softmax(dim=axis)
        return a.log_softmax(axis) if engine else a.log_softmax(dim=axis)
    if kind == "binary":
        a, b = xs
        return {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                "div": lambda: a / (b * b + 1)}[param]()
    if kind == "const":  # a number or an array on the left or the right (reflected forms)
        a = xs[0]
        op, value, left = param
        c = value if engine or not isinstance(value, np.ndarray) else torch.tensor(value)
        if op == "add":
            return c + a if left else a + c
        if op == "sub":
            return c - a if left else a - c
        if op == "mul":
            return c * a if left else a * c
        return c / (a * a + 1) if left else a / c
    if kind == "reduce":
        name, axis, keep = param
        a = xs[0]
        if engine:
            return getattr(a, name)(axis=axis, keepdims=keep)
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
        return fn(a, dim=axis if axis is not None else tuple(range(a.ndim)), keepdim=keep)
    if kind == "matmul":
        a, b = xs
        if param:
            b = b.transpose(*range(b.ndim - 2), b.ndim - 1, b.ndim - 2) if engine else b.transpose(-1, -2)
        return a @ b
    if kind == "reshape":
        return xs[0].reshape(*param)
    if kind == "T":
        return xs[0].T if engine else xs[0].permute(*reversed(range(xs[0].ndim)))
    if kind == "getitem":
        return xs[0][param] if engine else xs[0][torch.tensor(param)]
    if kind == "stack":
        return stack(xs, axis=param) if engine else torch.stack(xs, dim=param)
    if kind == "concat":
        return concat(xs, axis=param) if engine else torch.cat(xs, dim=param)
    raise AssertionError(kind)


@st.composite
def graphs(draw):
    """(input shapes, seed, program): a random graph of 1–9 ops over 1–3 inputs."""
    n_inputs = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_inputs)]
    seed = draw(st.integers(0, 2 ** 32 - 1))
    values = [Tensor(v) for v in input_values(shapes, seed)]
    rec = Recorder(draw, values)
    for _ in range(draw(st.integers(1, 9))):
        a = rec.pool[rec.pick()]
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "const", "reduce", "matmul", "shape",
                                     "getitem", "join"]))
        i = next(j for j, x in enumerate(rec.pool) if x is a)
        if kind == "unary":
            name = draw(st.sampled_from(UNARY))
            if name in ("softmax", "log_softmax") and a.ndim == 0:
                continue
            param = name
            args = (i,)
        elif kind == "binary":
            j = rec.pick()
            try:
                np.broadcast_shapes(a.shape, rec.pool[j].shape)
            except ValueError:
                continue
            param, args = draw(st.sampled_from(BINARY)), (i, j)
        elif kind == "const":
            op = draw(st.sampled_from(BINARY))
            if draw(st.booleans()):
                value = draw(st.sampled_from([2.5, -0.5, 3]))
            else:
                shape = a.shape[-draw(st.integers(0, a.ndim)):] if a.ndim else ()
                value = np.linspace(0.5, 1.5, int(np.prod(shape))).reshape(shape)
            param, args = (op, value, draw(st.booleans())), (i,)
        elif kind == "reduce":
            axis = draw(st.one_of(st.none(), st.integers(-a.ndim, a.ndim - 1))) if a.ndim else None
            param, args = (draw(st.sampled_from(["sum", "mean", "max"])), axis, draw(st.booleans())), (i,)
        elif kind == "matmul":
            j = rec.pick()
            b = rec.pool[j]
            if a.ndim == 0 or b.ndim == 0:
                continue
            transpose = b.ndim >= 2 and a.shape[-1] != b.shape[-2]
            bt = b.shape[:-2] + b.shape[:-3:-1] if transpose else b.shape
            try:
                np.matmul(np.zeros(a.shape), np.zeros(bt))
            except ValueError:
                continue
            param, args = transpose, (i, j)
        elif kind == "shape":
            if a.ndim >= 2 and draw(st.booleans()):
                kind, param = "T", None
            else:
                kind, param = "reshape", ((-1,) if a.ndim < 2 else (a.shape[0], -1))
            args = (i,)
        elif kind == "getitem":
            if a.ndim == 0:
                continue
            kind = "getitem"
            param = np.array(draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=1, max_size=5)))
            args = (i,)
        else:
            same = [k for k, v in enumerate(rec.pool) if v.shape == a.shape]
            j = draw(st.sampled_from(same))
            if draw(st.booleans()) or a.ndim == 0:
                kind, param = "stack", draw(st.integers(-a.ndim - 1, a.ndim))
            else:
                kind, param = "concat", draw(st.integers(-a.ndim, a.ndim - 1))
            args = (i, j)
        value = replay(kind, [rec.pool[k] for k in args], param, engine=True)
        rec.add(kind, args, param, value)
        if np.abs(value.data).max(initial=0) > 20:  # keep values where float64 differences are accurate
            rec.add("unary", (len(rec.pool) - 1,), "tanh", value.tanh())
    return shapes, seed, rec.program


def input_values(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def run(program, inputs, engine=True):
    """Replay a program; the output weighs every value made (fan-out everywhere) into one scalar."""
    pool = list(inputs)
    for kind, args, param in program:
        pool.append(replay(kind, [pool[k] for k in args], param, engine))
    total = None
    for k, v in enumerate(pool[len(inputs):] or pool):
        w = np.random.default_rng(k).standard_normal(tuple(v.shape))
        term = (v * (Tensor(w) if engine else torch.tensor(w))).sum()
        total = term if total is None else total + term
    return total


CHECKED = {"graphs": 0, "cells": 0}


@given(graphs())
def test_random_graph_gradients_equal_finite_differences(numerical_grad, engine_grads, graph):
    shapes, seed, program = graph
    arrays = input_values(shapes, seed)
    fn = (lambda *xs: run(program, xs))
    numeric = numerical_grad(fn, arrays)
    for i, (got, n) in enumerate(zip(engine_grads(fn, arrays), numeric)):
        assert got.shape == arrays[i].shape
        np.testing.assert_allclose(got, n, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(n).max(initial=0)),
                                   err_msg=f"input {i} of {program}")
    CHECKED["graphs"] += 1


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@given(graphs())
def test_random_graph_matches_torch(graph):
    shapes, seed, program = graph
    arrays = input_values(shapes, seed)
    params = [Parameter(a.copy()) for a in arrays]
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, out_t = run(program, params), run(program, leaves, engine=False)
    np.testing.assert_allclose(out.item(), out_t.item(), rtol=1e-10, atol=1e-12)
    out.backward()
    out_t.backward()
    for i, (p, q) in enumerate(zip(params, leaves)):
        got = np.zeros(p.shape) if p.grad is None else p.grad
        expected = np.zeros(p.shape) if q.grad is None else q.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11, err_msg=f"input {i} of {program}")
    CHECKED["graphs"] += 1


# --- random unrolled cells --------------------------------------------------------------------------------

CELLS = ["elman", "two_layer", "gated", "residual"]


@st.composite
def cells(draw):
    return dict(cell=draw(st.sampled_from(CELLS)), T=draw(st.integers(1, 4)), d=draw(st.integers(1, 3)),
                n=draw(st.integers(1, 2)), batch=draw(st.sampled_from([None, 1, 2])),
                nonlinearity=draw(st.sampled_from(["tanh", "sigmoid"])), seed=draw(st.integers(0, 2 ** 32 - 1)),
                loss=draw(st.sampled_from(["ce", "squares"])))


def cell_arrays(spec):
    rng = np.random.default_rng(spec["seed"])
    d, n = spec["d"], spec["n"]
    shape = (spec["T"], n) if spec["batch"] is None else (spec["T"], spec["batch"], n)
    weights = {"U": rng.uniform(-1, 1, (n, d)), "W": rng.uniform(-1, 1, (d, d)), "b": rng.uniform(-1, 1, d),
               "Z": rng.uniform(-1, 1, (d, d)), "V": rng.uniform(-1, 1, (d, 3))}
    return weights, rng.standard_normal(shape), rng.integers(0, 3, size=shape[:-1])


def cell_loss(spec, weights, xs, targets, tape=None, deltas=None, lib=None):
    """The unrolled cell; `deltas[name][t-1]` perturbs a weight at step t only. lib=torch replays in torch."""
    lib_t = lib is not None
    act = (lambda a: a.tanh()) if spec["nonlinearity"] == "tanh" else (lambda a: a.sigmoid())
    const = (lambda v: torch.tensor(v)) if lib_t else Tensor
    s = const(np.zeros(xs.shape[1:-1] + (spec["d"],)))
    total = 0
    for t in range(1, spec["T"] + 1):
        scope = tape.step(t) if tape is not None else _Nothing()
        with scope:
            def w(name):
                if deltas is not None and name in deltas:
                    return weights[name] + const(deltas[name][t - 1])
                return weights[name]
            x = const(xs[t - 1])
            a = x @ w("U") + s @ w("W") + w("b")
            if spec["cell"] == "elman":
                s = act(a)
            elif spec["cell"] == "two_layer":  # W used twice in one step
                s = act(act(a) @ w("W") + w("b"))
            elif spec["cell"] == "gated":  # z gates the update: s = z ⊙ s + (1 − z) ⊙ act(a)
                z = (s @ w("Z") + w("b")).sigmoid()
                s = z * s + (1 - z) * act(a)
            else:  # residual, with the shared bias used twice
                s = s * 0.5 + act(a) - w("b") * 0.1
            y = s @ w("V")
            if spec["loss"] == "ce":
                if lib_t:
                    logits = y if y.ndim == 2 else y[None]
                    step_loss = torch.nn.functional.cross_entropy(
                        logits, torch.tensor(np.atleast_1d(targets[t - 1])), reduction="sum")
                else:
                    step_loss = F.cross_entropy(y, targets[t - 1], reduction="sum")
            else:
                step_loss = (y * y).sum()
        total = total + step_loss
    return total


def recorded_cell(spec):
    """A random cell's unrolled loss recorded with every weight shared, after backward:
    (arrays, xs, targets, weights, tape, L)."""
    arrays, xs, targets = cell_arrays(spec)
    weights = {k: Parameter(v.copy(), name=k) for k, v in arrays.items()}
    tape = Unroll(shared=list(weights.values()))
    with tape:
        L = cell_loss(spec, weights, xs, targets, tape)
    L.backward()
    return arrays, xs, targets, weights, tape, L


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@given(cells())
def test_random_cell_step_gradients_equal_per_step_finite_differences(spec):
    arrays, xs, targets, weights, tape, L = recorded_cell(spec)
    eps = 1e-6
    for name, P in weights.items():
        if not any(P is q for q in tape.parameters):
            continue
        step_grads = tape.step_grads(P)
        assert len(tape.copies(P)) == spec["T"]
        np.testing.assert_allclose(step_grads.sum(axis=0), P.grad, rtol=1e-10, atol=1e-12)
        consts = {k: Tensor(v) for k, v in arrays.items()}
        deltas = np.zeros((spec["T"],) + P.shape)
        numeric = np.zeros_like(deltas)
        with no_grad():
            for idx in np.ndindex(*deltas.shape):
                deltas[idx] = eps
                plus = cell_loss(spec, consts, xs, targets, deltas={name: deltas}).item()
                deltas[idx] = -eps
                minus = cell_loss(spec, consts, xs, targets, deltas={name: deltas}).item()
                deltas[idx] = 0
                numeric[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(step_grads, numeric, rtol=1e-5, atol=1e-7, err_msg=f"{name} in {spec}")
    CHECKED["cells"] += 1


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@given(cells())
def test_random_cell_step_gradients_match_torch_per_step_leaves(spec):
    arrays, xs, targets, weights, tape, L = recorded_cell(spec)
    # torch: every weight gets one leaf δ_t per step (W_t = W + δ_t, δ_t = 0): ∂L/∂δ_t = ∂L/∂W(t)
    base = {k: torch.tensor(v) for k, v in arrays.items()}
    deltas = {k: torch.zeros((spec["T"],) + v.shape, dtype=torch.float64, requires_grad=True)
              for k, v in arrays.items()}
    L_t = _torch_cell_loss(spec, base, deltas, xs, targets)
    L_t.backward()
    np.testing.assert_allclose(L.item(), L_t.item(), rtol=1e-10)
    for name, P in weights.items():
        g = deltas[name].grad
        expected = np.zeros(deltas[name].shape) if g is None else g.numpy()
        if any(P is q for q in tape.parameters):
            np.testing.assert_allclose(tape.step_grads(P), expected, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(expected, 0)
    CHECKED["cells"] += 1


def _torch_cell_loss(spec, base, deltas, xs, targets):
    """cell_loss in torch, with W_t = W + δ_t for every weight at every step."""
    total = 0
    s = torch.zeros(xs.shape[1:-1] + (spec["d"],), dtype=torch.float64)
    act = torch.tanh if spec["nonlinearity"] == "tanh" else torch.sigmoid
    for t in range(spec["T"]):
        w = {k: base[k] + deltas[k][t] for k in base}
        a = torch.tensor(xs[t]) @ w["U"] + s @ w["W"] + w["b"]
        if spec["cell"] == "elman":
            s = act(a)
        elif spec["cell"] == "two_layer":
            s = act(act(a) @ w["W"] + w["b"])
        elif spec["cell"] == "gated":
            z = torch.sigmoid(s @ w["Z"] + w["b"])
            s = z * s + (1 - z) * act(a)
        else:
            s = s * 0.5 + act(a) - w["b"] * 0.1
        y = s @ w["V"]
        if spec["loss"] == "ce":
            logits = y if y.ndim == 2 else y[None]
            total = total + torch.nn.functional.cross_entropy(
                logits, torch.tensor(np.atleast_1d(targets[t])), reduction="sum")
        else:
            total = total + (y * y).sum()
    return total


@given(cells())
def test_random_cell_passes_gradcheck(spec):
    arrays, xs, targets = cell_arrays(spec)
    weights = {k: Parameter(v.copy(), name=k) for k, v in arrays.items()}

    def loss(*params):
        tape = Unroll(shared=params)
        with tape:
            return cell_loss(spec, dict(zip(weights, params)), xs, targets, tape)

    assert gradcheck(loss, list(weights.values()))
    CHECKED["cells"] += 1


def test_report_how_many_examples_ran():
    """Not a check: prints the number of random graphs and cells verified in this session (pytest -s)."""
    print(f"\nproperty tests checked {CHECKED['graphs']} random graphs and {CHECKED['cells']} random cells")
