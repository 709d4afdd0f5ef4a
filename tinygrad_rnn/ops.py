"""The primitives: each op's forward and its backward side by side, and above them its Op.

Every op computes its value with numpy and hands `result` a closure `backward(g)` that returns
one gradient per input (None where an input needs none). Closures capture arrays, never the
output tensor, so freeing a graph is dropping its closures. Each op's Op (tensor.Op) declares what
its backward reads (`saves`) and anything else the engine or a drawing needs to know (`pairs`,
`view`, `batched`). Broadcasting is undone in exactly one place, `unbroadcast`; a weight's gradient
through a matrix product is formed in exactly one place, `lazy.weight_grad`.
"""
from __future__ import annotations

import math

import numpy as np

from . import lazy
from .lazy import transposed
from .tensor import Op, Tensor, current_step, in_current_step, result, shape_error, step_results, view


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` back to `shape`: the adjoint of numpy broadcasting (leading axes and size-1 axes)."""
    if grad.shape == shape:
        return grad
    if grad.size == math.prod(shape):
        return grad.reshape(shape)  # only size-1 axes differ (a batch of one): nothing to sum
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def elementwise(op, ufunc, a, b):
    """ufunc(a, b) with numpy broadcasting, or a ShapeError naming both operands and the step."""
    try:
        return ufunc(a.data, b.data)
    except ValueError:
        raise shape_error(op, (a, b), "shapes cannot be broadcast together") from None


def as_tensor(x, like):
    """Numbers and arrays meet tensors as constants of the tensor's dtype (no silent upcast to float64)."""
    if isinstance(x, Tensor):
        return x
    dtype = like.data.dtype if like.data.dtype.kind == "f" else None
    return Tensor(x, dtype=dtype)


# --- elementwise arithmetic (numpy broadcasting; gradients unbroadcast) ----------------------

def _same(g):
    return g, g


def _same_negated(g):
    return g, -g


ADD = Op("add", saves=())


def add(a, b):
    b = as_tensor(b, a)
    sa, sb = a.data.shape, b.data.shape
    if sa == sb:  # no broadcasting: the gradient passes to both unchanged (no closure to make)
        return result(elementwise("add", np.add, a, b), ADD, (a, b), _same)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(g, sb)
    return result(elementwise("add", np.add, a, b), ADD, (a, b), backward)


SUB = Op("sub", saves=())


def sub(a, b):
    b = as_tensor(b, a)
    sa, sb = a.data.shape, b.data.shape
    if sa == sb:
        return result(elementwise("sub", np.subtract, a, b), SUB, (a, b), _same_negated)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(-g, sb)
    return result(elementwise("sub", np.subtract, a, b), SUB, (a, b), backward)


MUL = Op("mul", saves=("inputs",))


def mul(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    need_x, need_y = a.requires_grad, b.requires_grad
    def backward(g):
        return (unbroadcast(g * y, x.shape) if need_x else None,
                unbroadcast(g * x, y.shape) if need_y else None)
    return result(elementwise("mul", np.multiply, a, b), MUL, (a, b), backward)


DIV = Op("div", saves=("inputs",))


def div(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    def backward(g):
        gx = g / y
        return unbroadcast(gx, x.shape), unbroadcast(-gx * x / y, y.shape)
    return result(elementwise("div", np.divide, a, b), DIV, (a, b), backward)


NEG = Op("neg", saves=())


def neg(a):
    return result(-a.data, NEG, (a,), lambda g: (-g,))


POW = Op("pow", saves=("inputs",))


def pow(a, exponent):
    if isinstance(exponent, Tensor) or not np.isscalar(exponent):
        raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__}")
    if isinstance(exponent, np.generic):
        exponent = exponent.item()  # a Python number keeps float32 data float32
    x = a.data
    def backward(g):
        if exponent == 0:
            return (np.zeros_like(g),)  # x ** 0 is constant (also at x = 0, where x ** -1 is inf)
        return (g * exponent * x ** (exponent - 1),)
    return result(x ** exponent, POW, (a,), backward)


# --- matrix product -----------------------------------------------------------------------------

def _matmul_mismatch(x, w):
    if x.ndim == 0 or w.ndim == 0:
        return "matmul needs at least 1-D operands; use * for scalars"
    inner = w.shape[-2 if w.ndim > 1 else 0]
    if x.shape[-1] != inner:
        return f"inner dimensions {x.shape[-1]} and {inner} differ"
    return "batch dimensions cannot be broadcast together"


MATMUL = Op("matmul", saves=("inputs",))


def matmul(a: Tensor, b) -> Tensor:
    b = as_tensor(b, a)
    x, w = a.data, b.data
    try:
        y = x.dot(w) if x.ndim == 2 and w.ndim == 2 else x @ w  # (dot: half the cost on tiny arrays)
    except ValueError:  # numpy checks the shapes; we only explain what it found (no extra work per call)
        raise shape_error("matmul", (a, b), _matmul_mismatch(x, w)) from None
    how = lazy.plan(a, b)  # ∂w as factors? (see lazy.py)
    need_x, need_w = a.requires_grad, b.requires_grad  # a constant input x(t) needs no gradient
    if x.ndim == 2 and w.ndim == 2:  # the recurrent cell's shapes: the short path (ndarray.dot = @ here)
        def backward(g):
            return (g.dot(transposed(w)) if need_x else None,
                    lazy.weight_grad(x, g, how) if need_w else None)
        return result(y, MATMUL, (a, b), backward)

    def backward(g):  # 1-D operands are promoted to matrices; leading (batch) axes unbroadcast
        x2 = x[None, :] if x.ndim == 1 else x
        w2 = w[:, None] if w.ndim == 1 else w
        g2 = g
        if w.ndim == 1:  # (this order also turns a scalar g of vector @ vector into (1, 1))
            g2 = np.expand_dims(g2, -1)
        if x.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        gx = unbroadcast(g2 @ np.swapaxes(w2, -1, -2), x2.shape).reshape(x.shape) if need_x else None
        if not need_w:
            gw = None
        elif how != lazy.DENSE:
            gw = lazy.weight_grad(x2.reshape(-1, x2.shape[-1]), g2.reshape(-1, g2.shape[-1]), how)
        else:
            gw = unbroadcast(np.swapaxes(x2, -1, -2) @ g2, w2.shape).reshape(w.shape)
        return gx, gw
    return result(y, MATMUL, (a, b), backward)


AFFINE = Op("affine", saves=("inputs",), pairs=True)


def affine(terms, bias: Tensor | None = None) -> Tensor:
    """Σ_i x_i @ w_i + bias as ONE node: the lecture's a_t = x_t U + s_{t−1} W + b.

    terms: [(x_1, w_1), (x_2, w_2), ...] with 1-D or 2-D x_i and 2-D w_i; inputs in that order, bias last.
    One node instead of 2n (matmuls and adds): the walk does less, and no intermediate (x U, s W, their
    sum) is kept alive by the graph. Its gradient is each matmul's, side by side.
    """
    inputs, saved, y = [], [], None
    for x, w in terms:
        if not isinstance(w, Tensor):
            w = as_tensor(w, x)
        xd, wd = x.data, w.data
        if xd.ndim not in (1, 2) or wd.ndim != 2:
            return _affine_from_ops(terms, bias)
        try:
            xw = xd.dot(wd)  # = xd @ wd for these shapes; ndarray.dot costs half as much on tiny arrays
        except ValueError:
            raise shape_error("affine", (x, w), _matmul_mismatch(xd, wd)) from None
        if y is None:
            y = xw
        elif xw.shape != y.shape:
            raise shape_error("affine", (x, w), f"this term has shape {xw.shape}, the first {y.shape}")
        elif xw.dtype == y.dtype:
            y += xw
        else:
            y = y + xw  # mixed precision: numpy's promotion, as x @ U + s @ W would give
        inputs += (x, w)
        saved.append((xd, wd, x.requires_grad, w.requires_grad, lazy.plan(x, w)))  # (x, w, ∂x?, ∂w?, how ∂w)
    bias_shape = None
    if bias is not None:
        bias = as_tensor(bias, terms[0][0])
        try:
            y = np.add(y, bias.data, out=y) if bias.data.dtype == y.dtype else y + bias.data
        except ValueError:
            raise shape_error("affine", (bias,), f"a bias must broadcast to the result's shape {y.shape}") from None
        inputs.append(bias)
        bias_shape = bias.data.shape

    def backward(g):
        grads = []
        for x, w, need_x, need_w, how in saved:
            grads.append(g.dot(transposed(w)) if need_x else None)
            grads.append(lazy.weight_grad(x, g, how) if need_w else None)
        if bias_shape is not None:
            grads.append(unbroadcast(g, bias_shape))
        return grads
    return result(y, AFFINE, tuple(inputs), backward)


def _affine_from_ops(terms, bias):
    """affine for other shapes (batched 3-D inputs, 1-D weights): the same sum from matmuls and adds."""
    out = None
    for x, w in terms:
        out = x @ w if out is None else out + x @ w
    return out if bias is None else out + bias


# --- reductions ---------------------------------------------------------------------------------

def _expand_like(g, shape, axis, keepdims):
    """Put reduced axes back into g (as size 1) so it broadcasts against the input."""
    if axis is None:
        return np.reshape(g, (1,) * len(shape))
    if not keepdims:
        g = np.expand_dims(g, axis)
    return g


SUM = Op("sum", saves=())


def sum(a, axis=None, keepdims=False):
    shape = a.data.shape
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims), shape),)
    return result(np.asarray(a.data.sum(axis=axis, keepdims=keepdims)), SUM, (a,), backward)


MEAN = Op("mean", saves=())


def mean(a, axis=None, keepdims=False):
    shape = a.data.shape
    out = np.asarray(a.data.mean(axis=axis, keepdims=keepdims))
    count = a.data.size // (out.size or 1)  # (this module shadows the builtins sum, max and pow)
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims) / count, shape),)
    return result(out, MEAN, (a,), backward)


MAX = Op("max", saves=("inputs", "output"))


def max(a, axis=None, keepdims=False):
    x = a.data
    out = np.asarray(x.max(axis=axis, keepdims=keepdims))
    def backward(g):
        # ties share the gradient evenly (as torch.amax does)
        hit = x == _expand_like(out, x.shape, axis, keepdims)
        share = (hit / hit.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)
        return (share * _expand_like(g, x.shape, axis, keepdims),)
    return result(out, MAX, (a,), backward)


# --- elementwise functions ---------------------------------------------------------------------

EXP = Op("exp", saves=("output",))


def exp(a):
    y = np.exp(a.data)
    return result(y, EXP, (a,), lambda g: (g * y,))


LOG = Op("log", saves=("inputs",))


def log(a):
    x = a.data
    return result(np.log(x), LOG, (a,), lambda g: (g / x,))


TANH = Op("tanh", saves=("output",))


def tanh(a):
    y = np.tanh(a.data)
    return result(y, TANH, (a,), lambda g: (g * (1 - y * y),))


SIGMOID = Op("sigmoid", saves=("output",))


def sigmoid(a):
    x = a.data
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return result(y, SIGMOID, (a,), lambda g: (g * y * (1 - y),))


RELU = Op("relu", saves=("inputs",))


def relu(a):
    x = a.data
    return result(np.maximum(x, 0), RELU, (a,), lambda g: (g * (x > 0),))


SOFTMAX = Op("softmax", saves=("output",))


def softmax(a, axis=-1):
    x = a.data
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return result(y, SOFTMAX, (a,), backward)


LOG_SOFTMAX = Op("log_softmax", saves=("output",))


def log_softmax(a, axis=-1):
    x = a.data
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    def backward(g):
        return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)
    return result(y, LOG_SOFTMAX, (a,), backward)


_ROWS = {}


def _row_numbers(n):
    """np.arange(n), cached: cross-entropy picks one entry per row at every step."""
    rows = _ROWS.get(n)
    if rows is None:
        rows = _ROWS[n] = np.arange(n)
        rows.flags.writeable = False
    return rows


CROSS_ENTROPY = Op("cross_entropy", saves=())  # (its backward uses arrays of its own)


def softmax_cross_entropy(z, targets, rows):
    """The rule of softmax cross-entropy, for logits rows z (N, k), integer targets (N,) and rows =
    arange(N): (losses −log softmax(z)[target] (N,), p_minus_onehot() -> ∂loss/∂z (N, k)), the notes'
    p − onehot(target). Used by cross_entropy and by batched.cross_entropy_steps (all steps at once)."""
    pick = (rows, targets)
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    losses = np.log(total[:, 0]) - shifted[pick]

    def p_minus_onehot():
        dz = e / total                   # p
        dz[pick] -= 1                    # p − onehot
        return dz
    return losses, p_minus_onehot


def cross_entropy(logits: Tensor, targets, reduction: str = "mean") -> Tensor:
    """−log softmax(logits)[target] per row; its backward is the notes' p − onehot(target).

    logits (B, k) with integer targets (B,), or logits (k,) with one integer target.
    """
    z = logits.data
    targets = np.array(targets)  # our own copy: the caller may refill its target buffer before backward
    n = z.shape[0] if z.ndim == 2 else 1
    losses, p_minus_onehot = softmax_cross_entropy(z.reshape(n, z.shape[-1]), targets.reshape(n), _row_numbers(n))
    losses = losses.reshape(z.shape[:-1])
    out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    def backward(g):
        dz = p_minus_onehot().reshape(z.shape)
        if reduction == "none" and z.ndim == 2:
            return (dz * g[:, None],)
        return (dz * (g / losses.size if reduction == "mean" else g),)
    return result(np.asarray(out, dtype=z.dtype), CROSS_ENTROPY, (logits,), backward)


BINARY_CROSS_ENTROPY = Op("binary_cross_entropy", saves=("inputs",))


def binary_cross_entropy(probs, targets, reduction="mean"):
    """−[t log p + (1 − t) log(1 − p)] elementwise; as in PyTorch each log is clamped at −100, so a
    saturated p (float32 sigmoid(40) is exactly 1) gives a finite loss and gradient, not NaN."""
    p, t = probs.data, np.array(targets)  # our own copy: the caller may refill its target buffer before backward
    with np.errstate(divide="ignore"):
        log_p, log_q = np.maximum(np.log(p), -100), np.maximum(np.log1p(-p), -100)
    losses = -(t * log_p + (1 - t) * log_q)
    out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    def backward(g):
        dp = (p - t) / np.maximum(p * (1 - p), 1e-12)
        return (dp * (g / losses.size if reduction == "mean" else g),)
    return result(np.asarray(out, dtype=p.dtype), BINARY_CROSS_ENTROPY, (probs,), backward)


# --- shape ----------------------------------------------------------------------------------------

RESHAPE = Op("reshape", saves=(), view=True)


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    old = a.data.shape
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise shape_error("reshape", (a,), f"cannot reshape {a.data.size} elements into {shape}") from None
    return view(result(out, RESHAPE, (a,), lambda g: (g.reshape(old),)), a)


TRANSPOSE = Op("transpose", saves=(), view=True)


def transpose(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(axis % a.data.ndim for axis in axes) or None  # negative axes name the same axes
    inverse = None if axes is None else tuple(np.argsort(axes))
    return view(result(np.transpose(a.data, axes), TRANSPOSE, (a,), lambda g: (np.transpose(g, inverse),)), a)


GETITEM = Op("getitem", saves=(), view=True)  # (a view for basic indexing only)


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    shape, dtype = a.data.shape, a.data.dtype
    advanced = isinstance(index, (list, np.ndarray)) or (
        isinstance(index, tuple) and any(isinstance(i, (list, np.ndarray)) for i in index))
    def backward(g):
        gx = np.zeros(shape, dtype)
        if advanced:
            np.add.at(gx, index, g)  # repeated indices add up
        else:
            gx[index] = g
        return (gx,)
    out = result(a.data[index], GETITEM, (a,), backward)
    return out if advanced else view(out, a)


SPLIT = Op("split", saves=(), view=True, batched=True)


def split(a: Tensor, sections, axis: int = -1) -> list:
    """np.split(a, sections, axis) as one node per piece, the pieces sharing one backward (a multi-output op,
    see autograd.StepBatch): ∂L/∂a is the pieces' gradients side by side, one array — not, as indexing each
    piece would give, a zero-filled array of a's full size per piece. For gates: `i, f, g, o = split(z, 4)`."""
    x = a.data
    try:
        pieces = np.split(x, sections, axis=axis)
    except (ValueError, IndexError, TypeError) as e:
        raise shape_error("split", (a,), str(e)) from None
    step = current_step()
    t = None if step is None else step.t
    parents = in_current_step((a,))

    def backward(gs):
        whole = np.concatenate([np.zeros(p.shape, x.dtype) if g is None else g for g, p in zip(gs, pieces)],
                               axis=axis)
        first = next(i for i, g in enumerate(gs) if g is not None)  # a live member carries the one gradient
        return [(whole,) if i == first else None for i in range(len(gs))]
    members = step_results(pieces, SPLIT, [parents] * len(pieces), [t] * len(pieces), backward)
    for m in members:
        view(m, a)
    return members


def _tensor_list(op, items):
    items = list(items)
    like = next((t for t in items if isinstance(t, Tensor)), None)
    if like is None:
        raise ValueError(f"{op}: expects a non-empty list with at least one Tensor")
    return [as_tensor(t, like) for t in items]


STACK = Op("stack", saves=())


def stack(tensors, axis: int = 0) -> Tensor:
    tensors = _tensor_list("stack", tensors)
    def backward(g):
        return tuple(g if axis == 0 else np.moveaxis(g, axis, 0))
    if len({t.data.shape for t in tensors}) != 1:
        raise shape_error("stack", tensors, "stack needs equal shapes")
    return result(np.stack([t.data for t in tensors], axis=axis), STACK, tuple(tensors), backward)


CONCAT = Op("concat", saves=())


def concat(tensors, axis: int = 0) -> Tensor:
    tensors = _tensor_list("concat", tensors)
    try:
        joined = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise shape_error("concat", tensors, str(e)) from None
    bounds = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]
    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))
    return result(joined, CONCAT, tuple(tensors), backward)


def install_methods(cls):
    """Tensor's operators and methods are the ops above (one place to read each gradient)."""
    cls.__add__ = add
    cls.__radd__ = lambda self, other: add(as_tensor(other, self), self)
    cls.__sub__ = sub
    cls.__rsub__ = lambda self, other: sub(as_tensor(other, self), self)
    cls.__mul__ = mul
    cls.__rmul__ = lambda self, other: mul(as_tensor(other, self), self)
    cls.__truediv__ = div
    cls.__rtruediv__ = lambda self, other: div(as_tensor(other, self), self)
    cls.__neg__ = neg
    cls.__pow__ = pow
    cls.__matmul__ = matmul
    cls.__rmatmul__ = lambda self, other: matmul(as_tensor(other, self), self)
    cls.__getitem__ = getitem
    for fn in (sum, mean, max, exp, log, tanh, sigmoid, relu, softmax, log_softmax, reshape, transpose):
        setattr(cls, fn.__name__, fn)
    cls.T = property(lambda self: transpose(self))


install_methods(Tensor)
