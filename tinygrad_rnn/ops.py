"""The primitives: each op's forward and its backward side by side, and above them its Op.

Every op computes its value with numpy and hands `result` a closure `backward(g)` that returns
one gradient per input (None where an input needs none). Closures capture arrays, never the
output tensor, so freeing a graph is dropping its closures. Each op's Op (tensor.Op) declares what
its backward reads (`saves`) and anything else the engine or a drawing needs to know (`pairs`,
`view`, `batched`). Broadcasting is undone in exactly one place, `unbroadcast`; a weight's gradient
through a matrix product is formed in exactly one place, `lazy.weight_grad`.
"""
from __future__ import annotations

import builtins
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


def elementwise(op, ufunc, a, b, x=None, y=None):
    """ufunc(a, b) with numpy broadcasting (on x, y: a's and b's arrays in the result dtype, see operands),
    always an ndarray, or a ShapeError naming both operands and the step."""
    try:
        out = ufunc(a.data if x is None else x, b.data if y is None else y)
    except ValueError:
        raise shape_error(op, (a, b), "shapes cannot be broadcast together") from None
    return out if type(out) is np.ndarray else np.asarray(out)  # 0-d inputs give numpy scalars


def ndarray(y):
    """y as an ndarray: numpy returns scalars for 0-d results, and `.data` is always an array."""
    return y if type(y) is np.ndarray else np.asarray(y)


def promoted(da: np.dtype, db: np.dtype) -> np.dtype:
    """torch.promote_types: a floating type wins over integers and bools (int64 + float32 is float32)."""
    fa, fb = da.kind == "f", db.kind == "f"
    if fa != fb:
        return da if fa else db
    return np.promote_types(da, db)


def result_dtype(x: np.ndarray, y: np.ndarray) -> np.dtype:
    """torch's type promotion for two operands: a 0-d operand (or a Python number, which arrives as one)
    only decides the dtype when it is of a higher category (bool < integer < float) than the other, so a
    float32 tensor stays float32 beside a float64 0-d tensor, and an int tensor + 0.5 is float32."""
    if x.ndim and not y.ndim:
        dim, zero = x.dtype, y.dtype
    elif y.ndim and not x.ndim:
        dim, zero = y.dtype, x.dtype
    else:
        return promoted(x.dtype, y.dtype)
    if dim.kind == "f" or not (dim.kind == "b" or zero.kind == "f"):
        return dim
    return promoted(dim, zero)


def operands(a, b):
    """a's and b's arrays, both in the result dtype when they differ (torch's promotion, not numpy's)."""
    x, y = a.data, b.data
    if x.dtype is y.dtype:  # the common case costs one comparison
        return x, y
    dtype = result_dtype(x, y)
    return x.astype(dtype, copy=False), y.astype(dtype, copy=False)


def floating(x: np.ndarray) -> np.ndarray:
    """Integer and bool data computed on in float32, as torch does (sigmoid of ints is not truncated)."""
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def as_tensor(x, like):
    """Numbers and arrays meet tensors as constants of the tensor's dtype (no silent upcast to float64);
    beside integer data a Python float becomes float32 (torch's default dtype) and an int stays an int."""
    if isinstance(x, Tensor):
        return x
    kind = like.data.dtype.kind
    if kind == "f" or (kind in "iu" and isinstance(x, (int, np.integer)) and not isinstance(x, bool)):
        return Tensor(x, dtype=like.data.dtype)
    return Tensor(x)


# --- elementwise arithmetic (numpy broadcasting; gradients unbroadcast) ----------------------

def _same(g):
    return g, g


def _same_negated(g):
    return g, -g


ADD = Op("add", saves=())


def add(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    if x.dtype is not y.dtype:  # (inline: add, sub and mul are the hot path)
        x, y = operands(a, b)
    sa, sb = x.shape, y.shape
    if sa == sb:  # no broadcasting: the gradient passes to both unchanged (no closure to make)
        return result(elementwise("add", np.add, a, b, x, y), ADD, (a, b), _same)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(g, sb)
    return result(elementwise("add", np.add, a, b, x, y), ADD, (a, b), backward)


SUB = Op("sub", saves=())


def sub(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    if x.dtype is not y.dtype:  # (inline: add, sub and mul are the hot path)
        x, y = operands(a, b)
    sa, sb = x.shape, y.shape
    if sa == sb:
        return result(elementwise("sub", np.subtract, a, b, x, y), SUB, (a, b), _same_negated)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(-g, sb)
    return result(elementwise("sub", np.subtract, a, b, x, y), SUB, (a, b), backward)


MUL = Op("mul", saves=("inputs",))


def mul(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    if x.dtype is not y.dtype:
        x, y = operands(a, b)
    need_x, need_y = a.requires_grad, b.requires_grad
    def backward(g):
        return (unbroadcast(g * y, x.shape) if need_x else None,
                unbroadcast(g * x, y.shape) if need_y else None)
    return result(elementwise("mul", np.multiply, a, b, x, y), MUL, (a, b), backward)


DIV = Op("div", saves=("inputs",))


def div(a, b):
    b = as_tensor(b, a)
    x, y = operands(a, b)
    if x.dtype.kind != "f":  # true division of integers is float32 (torch), not numpy's float64
        x, y = floating(x), floating(y)
    def backward(g):
        gx = g / y
        return unbroadcast(gx, x.shape), unbroadcast(-gx * x / y, y.shape)
    return result(elementwise("div", np.divide, a, b, x, y), DIV, (a, b), backward)


NEG = Op("neg", saves=())


def neg(a):
    return result(ndarray(-a.data), NEG, (a,), lambda g: (-g,))


POW = Op("pow", saves=("inputs",))


def pow(a, exponent):
    """a ** exponent: a number, or a tensor (then ∂/∂exponent = a ** exponent · log a, as torch)."""
    if isinstance(exponent, Tensor) or not np.isscalar(exponent):
        return tensor_pow(a, as_tensor(exponent, a))
    if isinstance(exponent, np.generic):
        exponent = exponent.item()  # a Python number keeps float32 data float32
    x = a.data
    if x.dtype.kind != "f" and (isinstance(exponent, float) or exponent < 0):
        x = floating(x)  # int ** 0.5 or int ** -1 is float32 in torch (numpy: float64, or an error)
    def backward(g):
        if exponent == 0:
            return (np.zeros_like(g),)  # x ** 0 is constant (also at x = 0, where x ** -1 is inf)
        return (g * exponent * x ** (exponent - 1),)
    return result(ndarray(x ** exponent), POW, (a,), backward)


TENSOR_POW = Op("pow", saves=("inputs", "output"))


def tensor_pow(a, b):
    """a ** b elementwise for tensors a, b (broadcast); ∂a = b a^(b−1), ∂b = a^b log a (0 where a^b = 0)."""
    x, y = operands(a, b)  # (integers ** integers stay integers, as torch)
    out = elementwise("pow", np.power, a, b, x, y)
    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            gx = g * y * x ** (y - 1)
            gy = g * np.where(out == 0, 0, out * np.log(np.where(out == 0, 1, x)))
        return unbroadcast(gx, x.shape), unbroadcast(gy, y.shape)
    return result(out, TENSOR_POW, (a, b), backward)


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
    if x.dtype is not w.dtype:
        x, w = operands(a, b)
    try:
        y = x.dot(w) if x.ndim == 2 and w.ndim == 2 else ndarray(x @ w)  # (dot: half the cost on tiny arrays)
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


def reduced_axis(op, a, axis):
    """The axis (or axes) to reduce: a 0-d tensor's only axes are 0 and −1 (torch), which mean all of it;
    other out-of-range axes raise an error naming the op and the shape."""
    if axis is None:
        return None
    if isinstance(axis, list):
        axis = tuple(axis)
    ndim = a.data.ndim
    for ax in axis if isinstance(axis, tuple) else (axis,):
        if not -builtins.max(ndim, 1) <= ax < builtins.max(ndim, 1):
            raise shape_error(op, (a,), f"axis {ax} is out of range for {ndim} dimensions")
    return None if ndim == 0 else axis


SUM = Op("sum", saves=())


def sum(a, axis=None, keepdims=False):
    shape = a.data.shape
    axis = reduced_axis("sum", a, axis)
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims), shape),)
    return result(np.asarray(a.data.sum(axis=axis, keepdims=keepdims)), SUM, (a,), backward)


MEAN = Op("mean", saves=())


def mean(a, axis=None, keepdims=False):
    shape = a.data.shape
    axis = reduced_axis("mean", a, axis)
    out = np.asarray(floating(a.data).mean(axis=axis, keepdims=keepdims))
    count = a.data.size // (out.size or 1)  # (this module shadows the builtins sum, max and pow)
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims) / count, shape),)
    return result(out, MEAN, (a,), backward)


MAX = Op("max", saves=("inputs", "output"))


def max(a, axis=None, keepdims=False):
    return _extremum("max", MAX, np.max, a, axis, keepdims)


MIN = Op("min", saves=("inputs", "output"))


def min(a, axis=None, keepdims=False):
    return _extremum("min", MIN, np.min, a, axis, keepdims)


def _extremum(name, op, reduce, a, axis, keepdims):
    """max or min over axis; ties share the gradient evenly (as torch.amax / amin do)."""
    x = a.data
    axis = reduced_axis(name, a, axis)
    if x.size == 0:
        raise shape_error(name, (a,), "cannot reduce an empty tensor")
    out = np.asarray(reduce(x, axis=axis, keepdims=keepdims))
    def backward(g):
        hit = x == _expand_like(out, x.shape, axis, keepdims)
        share = (hit / hit.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)
        return (share * _expand_like(g, x.shape, axis, keepdims),)
    return result(out, op, (a,), backward)


# --- elementwise functions ---------------------------------------------------------------------

EXP = Op("exp", saves=("output",))


def exp(a):
    y = ndarray(np.exp(floating(a.data)))
    return result(y, EXP, (a,), lambda g: (g * y,))


LOG = Op("log", saves=("inputs",))


def log(a):
    x = floating(a.data)
    return result(ndarray(np.log(x)), LOG, (a,), lambda g: (g / x,))


TANH = Op("tanh", saves=("output",))


def tanh(a):
    x = a.data
    y = np.tanh(x if x.dtype.kind == "f" else floating(x))  # (inline checks: tanh is on the hot path)
    if type(y) is not np.ndarray:
        y = np.asarray(y)
    return result(y, TANH, (a,), lambda g: (g * (1 - y * y),))


SIGMOID = Op("sigmoid", saves=("output",))


def sigmoid(a):
    x = a.data
    if x.dtype.kind != "f":
        x = floating(x)
    y = logistic(x)
    return result(y, SIGMOID, (a,), lambda g: (g * y * (1 - y),))


def logistic(x):
    """σ(x) = 1 / (1 + e^−x) of a float array, split by sign so exp never overflows (sigmoid's value)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


RELU = Op("relu", saves=("inputs",))


def relu(a):
    x = a.data
    return result(ndarray(np.maximum(x, 0)), RELU, (a,), lambda g: (g * (x > 0),))


SOFTMAX = Op("softmax", saves=("output",))


def softmax(a, axis=-1):
    x = floating(a.data)
    if x.size == 0:  # an empty axis has nothing to normalise (max would raise): empty, as torch
        y = x.copy()
    else:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return result(y, SOFTMAX, (a,), backward)


LOG_SOFTMAX = Op("log_softmax", saves=("output",))


def log_softmax(a, axis=-1):
    x = floating(a.data)
    if x.size == 0:  # (see softmax)
        y = x.copy()
    else:
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


TARGETS_CROSS_ENTROPY = Op("cross_entropy", saves=())  # (its backward uses arrays of its own)


def distribution_cross_entropy(logits: Tensor, q: np.ndarray, count, reduction: str = "mean") -> Tensor:
    """−Σ_c q_c log softmax(logits)_c over the last axis, for a target distribution q of logits' shape
    (probability targets, label smoothing, ignored rows all zero); "mean" divides by `count` (torch: the
    rows not ignored). Backward: p Σ_c q_c − q, the notes' p − onehot when q is one-hot."""
    z = floating(logits.data)
    q = q.astype(z.dtype, copy=False)
    if z.size:
        shifted = z - z.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    else:
        log_p = z.copy()
    mass = q.sum(axis=-1, keepdims=True)
    losses = -(q * log_p).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # all rows ignored: nan, as torch
        out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.sum() / count
    def backward(g):
        scale = g[..., None] if reduction == "none" else g / count if reduction == "mean" else g
        return ((np.exp(log_p) * mass - q) * scale,)
    return result(np.asarray(out, dtype=z.dtype), TARGETS_CROSS_ENTROPY, (logits,), backward)


NLL_LOSS = Op("nll_loss", saves=())


def nll_loss(log_probs: Tensor, targets: np.ndarray, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """−log_probs[..., target] per row (classes on the last axis); rows whose target is ignore_index
    count for nothing, and "mean" divides by the rows kept (torch)."""
    x = log_probs.data
    targets = np.array(targets)  # our own copy (see cross_entropy)
    kept = targets != ignore_index
    safe = np.where(kept, targets, 0)[..., None]
    losses = np.where(kept, -np.take_along_axis(x, safe, axis=-1)[..., 0], 0).astype(x.dtype)
    count = kept.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.sum() / count
    def backward(g):
        scale = g if reduction == "none" else np.broadcast_to(g / count if reduction == "mean" else g, kept.shape)
        gx = np.zeros(x.shape, x.dtype)
        np.put_along_axis(gx, safe, np.where(kept, -scale, 0)[..., None].astype(x.dtype), axis=-1)
        return (gx,)
    return result(np.asarray(out, dtype=x.dtype), NLL_LOSS, (log_probs,), backward)


BCE_WITH_LOGITS = Op("binary_cross_entropy_with_logits", saves=("inputs",))


def binary_cross_entropy_with_logits(logits, targets, reduction="mean", pos_weight=None, weight=None):
    """−v [w t log σ(x) + (1 − t) log(1 − σ(x))] with w = pos_weight, v = weight (each 1 if None; v
    broadcasts to the logits: a mask of the real steps, as torch's weight), stable for large |x| (softplus,
    never log of a saturated sigmoid); ∂/∂x = v [(1 − t) σ(x) − w t σ(−x)]."""
    x = floating(logits.data)
    t = np.array(targets, dtype=x.dtype)
    w = 1 if pos_weight is None else np.asarray(pos_weight, dtype=x.dtype)
    v = 1 if weight is None else np.asarray(weight, dtype=x.dtype)
    losses = v * (w * t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x))
    out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    def backward(g):
        dx = v * ((1 - t) * _stable_sigmoid(x) - w * t * _stable_sigmoid(-x))
        return (dx * (g / losses.size if reduction == "mean" else g),)
    return result(np.asarray(out, dtype=x.dtype), BCE_WITH_LOGITS, (logits,), backward)


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
    """torch's transpose(dim0, dim1) swaps two axes; with no axes, or a full permutation (numpy's
    a.transpose(2, 0, 1) or a tuple), the axes are reordered as permute does."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        return permute(a, *axes[0])
    if len(axes) == 2:
        order = list(range(a.data.ndim))
        first, second = (_dim("transpose", a, d) for d in axes)
        order[first], order[second] = order[second], order[first]
        return permute(a, *order)
    return permute(a, *axes)


def permute(a, *dims):
    """The axes reordered: output axis i is input axis dims[i] (torch.permute; no dims: reversed)."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    if dims and sorted(_dim("permute", a, d) for d in dims) != list(range(a.data.ndim)):
        raise shape_error("permute", (a,), f"dims {dims} are not a permutation of {a.data.ndim} axes")
    axes = tuple(d % a.data.ndim for d in dims) or None  # negative axes name the same axes
    inverse = None if axes is None else tuple(np.argsort(axes))
    return view(result(np.transpose(a.data, axes), TRANSPOSE, (a,), lambda g: (np.transpose(g, inverse),)), a)


def _dim(op, a, d):
    """Axis d of a as a non-negative number, or an error naming the op and the shape."""
    ndim = builtins.max(a.data.ndim, 1)
    if not isinstance(d, (int, np.integer)) or not -ndim <= d < ndim:
        raise shape_error(op, (a,), f"dim {d!r} is out of range for {a.data.ndim} dimensions")
    return int(d) % ndim


def matrix_transpose(a):
    """a.mT: the last two axes swapped (a batch of matrices transposed)."""
    if a.data.ndim < 2:
        raise shape_error("mT", (a,), "needs at least 2 dimensions")
    return transpose(a, -2, -1) if a.data.ndim != 2 else permute(a, 1, 0)


GETITEM = Op("getitem", saves=(), view=True)  # (a view for basic indexing only)


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    shape, dtype = a.data.shape, a.data.dtype
    # a sequence inside the index tuple is advanced indexing too: x[(0, 0, 3), :] repeats row 0
    advanced = isinstance(index, (list, np.ndarray)) or (
        isinstance(index, tuple) and any(isinstance(i, (list, tuple, np.ndarray)) for i in index))
    def backward(g):
        gx = np.zeros(shape, dtype)
        if advanced:
            np.add.at(gx, index, g)  # repeated indices add up
        else:
            gx[index] = g
        return (gx,)
    out = result(ndarray(a.data[index]), GETITEM, (a,), backward)
    return out if advanced else view(out, a)


SPLIT = Op("split", saves=(), view=True, batched=True)


def split(a: Tensor, size_or_sizes, dim: int = 0) -> list:
    """torch.split: pieces of size_or_sizes along dim (the last one smaller), or of the listed sizes — not
    numpy's np.split(a, n), which cuts n pieces: that is chunk(a, n, dim), as torch.chunk."""
    n = a.data.shape[_dim("split", a, dim)] if a.data.ndim else 0
    if isinstance(size_or_sizes, (list, tuple)):
        if builtins.sum(size_or_sizes) != n or builtins.min(size_or_sizes, default=0) < 0:
            raise shape_error("split", (a,), f"sizes {list(size_or_sizes)} must be non-negative and add up to "
                                             f"{n}, the size of dim {dim}")
        bounds = np.cumsum(size_or_sizes)[:-1]
    else:
        if not isinstance(size_or_sizes, (int, np.integer)) or size_or_sizes <= 0:
            raise shape_error("split", (a,), f"split size must be a positive int, got {size_or_sizes!r}")
        bounds = range(size_or_sizes, n, size_or_sizes)
    return _pieces(a, np.split(a.data, list(bounds), axis=dim), dim)


def chunk(a: Tensor, chunks: int, dim: int = 0) -> list:
    """torch.chunk: at most `chunks` pieces of ceil(n / chunks) along dim. For gates: `i, f, g, o =
    chunk(z, 4, -1)`."""
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise shape_error("chunk", (a,), f"chunks must be a positive int, got {chunks!r}")
    n = a.data.shape[_dim("chunk", a, dim)]
    return split(a, builtins.max(-(-n // chunks), 1), dim)


def _pieces(a, pieces, axis):
    """The pieces of a (numpy views along axis) as one node each, sharing one backward (a multi-output op,
    see autograd.StepBatch): ∂L/∂a is the pieces' gradients side by side, one array — not, as indexing each
    piece would give, a zero-filled array of a's full size per piece."""
    x = a.data
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


# --- more elementwise functions (each float32 on integer data, as torch) ---------------------------------

SQRT = Op("sqrt", saves=("output",))


def sqrt(a):
    y = ndarray(np.sqrt(floating(a.data)))
    def backward(g):
        with np.errstate(divide="ignore"):
            return (g * 0.5 / y,)
    return result(y, SQRT, (a,), backward)


RSQRT = Op("rsqrt", saves=("output",))


def rsqrt(a):
    with np.errstate(divide="ignore"):
        y = ndarray(1 / np.sqrt(floating(a.data)))
    return result(y, RSQRT, (a,), lambda g: (g * -0.5 * y * y * y,))


ABS = Op("abs", saves=("inputs",))


def abs(a):
    """|a|; its gradient is sign(a), 0 at 0 (as torch)."""
    x = a.data
    return result(ndarray(np.abs(x)), ABS, (a,), lambda g: (g * np.sign(x),))


SIN = Op("sin", saves=("inputs",))


def sin(a):
    x = floating(a.data)
    return result(ndarray(np.sin(x)), SIN, (a,), lambda g: (g * np.cos(x),))


COS = Op("cos", saves=("inputs",))


def cos(a):
    x = floating(a.data)
    return result(ndarray(np.cos(x)), COS, (a,), lambda g: (-g * np.sin(x),))


CLAMP = Op("clamp", saves=("inputs",))


def clamp(a, min=None, max=None):
    """a limited to [min, max] (either may be None); the gradient passes where min ≤ a ≤ max (torch)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    x = a.data
    y = np.clip(x, min, max)
    if x.dtype.kind == "f":
        y = y.astype(x.dtype, copy=False)  # a Python float bound keeps float32 data float32
    def backward(g):
        inside = np.ones(x.shape, bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        return (g * inside,)
    return result(ndarray(y), CLAMP, (a,), backward)


clip = clamp


def _binary_extremum(name, op, ufunc, wins):
    def extremum(a, b):
        b = as_tensor(b, a)
        x, y = operands(a, b)
        def backward(g):  # ties split the gradient in half, as torch's maximum/minimum
            share = np.where(x == y, 0.5, wins(x, y)).astype(g.dtype, copy=False)
            return unbroadcast(g * share, x.shape), unbroadcast(g * (1 - share), y.shape)
        return result(elementwise(name, ufunc, a, b, x, y), op, (a, b), backward)
    extremum.__name__ = name
    extremum.__doc__ = f"Elementwise {name} of a and b (broadcast); at ties each gets half the gradient."
    return extremum


MAXIMUM, MINIMUM = Op("maximum", saves=("inputs",)), Op("minimum", saves=("inputs",))
maximum = _binary_extremum("maximum", MAXIMUM, np.maximum, np.greater)
minimum = _binary_extremum("minimum", MINIMUM, np.minimum, np.less)


SOFTPLUS = Op("softplus", saves=("inputs",))


def softplus(a, beta=1.0, threshold=20.0):
    """log(1 + exp(β a)) / β, linear where β a > threshold (torch's); its gradient is sigmoid(β a)."""
    x = floating(a.data)
    bx = x * beta
    y = np.where(bx > threshold, x, np.logaddexp(0, bx) / beta).astype(x.dtype, copy=False)
    def backward(g):
        return (g * np.where(bx > threshold, 1, _stable_sigmoid(bx)).astype(x.dtype, copy=False),)
    return result(ndarray(y), SOFTPLUS, (a,), backward)


def _stable_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


LOGSIGMOID = Op("logsigmoid", saves=("inputs",))


def logsigmoid(a):
    """log σ(a) = −softplus(−a), without overflow; its gradient is σ(−a)."""
    x = floating(a.data)
    y = (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)
    return result(ndarray(y), LOGSIGMOID, (a,), lambda g: (g * _stable_sigmoid(-x),))


SILU = Op("silu", saves=("inputs",))


def silu(a):
    """a σ(a); gradient σ(a) (1 + a (1 − σ(a)))."""
    x = floating(a.data)
    s = _stable_sigmoid(x)
    return result(ndarray(x * s), SILU, (a,), lambda g: (g * s * (1 + x * (1 - s)),))


GELU = Op("gelu", saves=("inputs",))
_erf = np.frompyfunc(math.erf, 1, 1)  # (numpy has no erf; gelu is not on any hot path)


def gelu(a, approximate="none"):
    """a Φ(a) with the normal CDF Φ (torch's default), or its tanh approximation (approximate="tanh")."""
    x = floating(a.data)
    if approximate == "none":
        cdf = (0.5 * (1 + _erf(x / math.sqrt(2)).astype(np.float64))).astype(x.dtype)
        def backward(g):
            return (g * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),)
        return result(ndarray(x * cdf), GELU, (a,), backward)
    if approximate != "tanh":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    k = math.sqrt(2 / math.pi)
    inner = np.tanh(k * (x + 0.044715 * x ** 3))
    def backward_tanh(g):
        return (g * (0.5 * (1 + inner) + 0.5 * x * (1 - inner * inner) * k * (1 + 3 * 0.044715 * x * x)),)
    return result(ndarray(0.5 * x * (1 + inner)), GELU, (a,), backward_tanh)


LEAKY_RELU = Op("leaky_relu", saves=("inputs",))


def leaky_relu(a, negative_slope=0.01):
    x = a.data
    slope = np.where(x > 0, 1, negative_slope).astype(floating(x).dtype)
    return result(ndarray(x * slope), LEAKY_RELU, (a,), lambda g: (g * slope,))


# --- masks -------------------------------------------------------------------------------------------

def _mask(op, condition):
    condition = np.asarray(condition.data if isinstance(condition, Tensor) else condition)
    if condition.dtype != np.bool_:
        raise TypeError(f"{op}: the condition/mask must be boolean, got dtype {condition.dtype}")
    return condition


WHERE = Op("where", saves=())  # (its backward reads the condition, an array of its own)


def where(condition, a, b):
    """a where condition holds, else b (all three broadcast; a or b may be numbers): torch.where. The
    gradient goes to a where the condition holds, to b elsewhere — a padded step's mask cuts it off."""
    c = _mask("where", condition)
    if not isinstance(a, Tensor):
        a = as_tensor(a, b)
    b = as_tensor(b, a)
    x, y = operands(a, b)
    try:
        out = np.where(c, x, y)
    except ValueError:
        raise shape_error("where", (a, b), f"the condition {c.shape} and the values cannot be broadcast together") \
            from None
    def backward(g):
        return unbroadcast(np.where(c, g, 0), x.shape), unbroadcast(np.where(c, 0, g), y.shape)
    return result(out, WHERE, (a, b), backward)


MASKED_FILL = Op("masked_fill", saves=())


def masked_fill(a, mask, value):
    """a with `value` where mask is True (mask broadcasts to a's shape); no gradient flows there."""
    m = _mask("masked_fill", mask)
    x = a.data
    try:
        keep = ~np.broadcast_to(m, x.shape)
    except ValueError:
        raise shape_error("masked_fill", (a,), f"the mask {m.shape} does not broadcast to it") from None
    out = np.where(keep, x, np.asarray(value.data if isinstance(value, Tensor) else value, dtype=x.dtype))
    return result(out, MASKED_FILL, (a,), lambda g: (g * keep,))


# --- more reductions --------------------------------------------------------------------------------

LOGSUMEXP = Op("logsumexp", saves=("inputs", "output"))


def logsumexp(a, axis=None, keepdims=False):
    """log Σ exp(a) over axis, stable; its gradient is softmax(a) over that axis."""
    x = floating(a.data)
    axis = reduced_axis("logsumexp", a, axis)
    top = x.max(axis=axis, keepdims=True) if x.size else np.zeros((1,) * x.ndim, x.dtype)
    top = np.where(np.isfinite(top), top, 0)
    kept = np.log(np.exp(x - top).sum(axis=axis, keepdims=True)) + top
    out = ndarray(kept if keepdims else (kept.reshape(()) if axis is None else np.squeeze(kept, axis)))
    def backward(g):
        return (_expand_like(g, x.shape, axis, keepdims) * np.exp(x - kept),)
    return result(out, LOGSUMEXP, (a,), backward)


VAR = Op("var", saves=("inputs",))


def var(a, axis=None, correction=1, keepdims=False):
    """The variance over axis, with torch's default correction=1 (unbiased); ∂ = 2 (a − mean) / (N − c)."""
    x = floating(a.data)
    axis = reduced_axis("var", a, axis)
    centred = x - x.mean(axis=axis, keepdims=True)
    count = x.size // builtins.max(np.mean(x, axis=axis).size, 1) if x.size else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ndarray(np.asarray((centred * centred).sum(axis=axis, keepdims=keepdims) / (count - correction),
                                 dtype=x.dtype))
    def backward(g):
        return (_expand_like(g, x.shape, axis, keepdims) * centred * (2 / (count - correction)),)
    return result(out, VAR, (a,), backward)


def std(a, axis=None, correction=1, keepdims=False):
    """sqrt(var(a)): two nodes, each with its own gradient."""
    return sqrt(var(a, axis, correction, keepdims))


CUMSUM = Op("cumsum", saves=())


def cumsum(a, dim):
    """Running sums along dim; backward is the reversed running sum of the gradient."""
    d = _dim("cumsum", a, dim)
    x = a.data
    if x.ndim == 0:
        return result(x.copy(), CUMSUM, (a,), lambda g: (g,))
    return result(np.cumsum(x, axis=d), CUMSUM, (a,),
                  lambda g: (np.flip(np.cumsum(np.flip(g, d), axis=d), d),))


# --- indexing and layout ------------------------------------------------------------------------------

FLIP = Op("flip", saves=())


def flip(a, dims):
    """a reversed along dims (a copy, as torch.flip)."""
    dims = tuple(_dim("flip", a, d) for d in ((dims,) if isinstance(dims, (int, np.integer)) else dims))
    return result(np.flip(a.data, dims).copy(), FLIP, (a,), lambda g: (np.flip(g, dims),))


REPEAT = Op("repeat", saves=())


def repeat(a, *sizes):
    """torch's repeat: the whole tensor tiled sizes[i] times along axis i (np.tile); backward sums the tiles."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if len(sizes) < a.data.ndim:
        raise shape_error("repeat", (a,), f"{len(sizes)} repeat sizes for {a.data.ndim} dimensions")
    shape = (1,) * (len(sizes) - a.data.ndim) + a.data.shape
    old = a.data.shape
    def backward(g):
        split_axes = [n for pair in zip(sizes, shape) for n in pair]  # (r₀, s₀, r₁, s₁, …)
        return (g.reshape(split_axes).sum(axis=tuple(range(0, len(split_axes), 2))).reshape(old),)
    return result(np.tile(a.data.reshape(shape), sizes), REPEAT, (a,), backward)


PAD = Op("pad", saves=())


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # torch's name -> numpy's


def pad(a, pad, mode="constant", value=0.0):
    """torch.nn.functional.pad: pad = (left, right) for the last axis, then (left, right) for the one before, …
    mode "constant" (value; backward crops the gradient back), or "reflect", "replicate", "circular": each
    output element is a copy of an input element (numpy's reflect, edge, wrap), so backward adds every
    copy's gradient onto its source."""
    if len(pad) % 2 or len(pad) // 2 > a.data.ndim:
        raise shape_error("pad", (a,), f"pad {tuple(pad)} needs (left, right) pairs for at most {a.data.ndim} axes")
    if builtins.min(pad, default=0) < 0:
        raise shape_error("pad", (a,), f"negative padding {tuple(pad)} is not supported")
    if mode != "constant" and mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be 'constant' or one of {list(_PAD_MODES)}, got {mode!r}")
    widths = [(0, 0)] * a.data.ndim
    for i in range(len(pad) // 2):
        widths[-1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        crop = tuple(slice(left, left + n) for (left, _), n in zip(widths, a.data.shape))
        out = np.pad(a.data, widths, constant_values=value)
        return result(out, PAD, (a,), lambda g: (g[crop],))
    shape, dtype = a.data.shape, a.data.dtype
    for (left, right), n in zip(widths, shape):
        if mode == "reflect" and builtins.max(left, right) >= n and left + right:
            raise shape_error("pad", (a,), f"reflect padding {(left, right)} must be smaller than the axis ({n})")
        if n == 0 and left + right:
            raise shape_error("pad", (a,), f"cannot {mode}-pad an empty axis")
    sources = np.ix_(*[np.pad(np.arange(n), w, mode=_PAD_MODES[mode]) for w, n in zip(widths, shape)])
    def backward(g):
        gx = np.zeros(shape, dtype)
        np.add.at(gx, sources, g)
        return (gx,)
    return result(a.data[sources], PAD, (a,), backward)


GATHER = Op("gather", saves=())


def _along(index, dim):
    """The full index tuple that picks index[..] along dim and the index's own position on other axes."""
    grid = list(np.ix_(*[np.arange(n) for n in index.shape]))
    grid[dim] = index
    return tuple(grid)


def gather(a, dim, index):
    """torch.gather: out[i][j] = a[index[i][j]][j] for dim 0 (and so on); repeated indices add up in the
    gradient."""
    index = np.asarray(index.data if isinstance(index, Tensor) else index)
    d = _dim("gather", a, dim)
    if index.dtype.kind not in "iu" or index.ndim != a.data.ndim:
        raise shape_error("gather", (a,), f"index must be an integer array with {a.data.ndim} dimensions, "
                                          f"got dtype {index.dtype} and shape {index.shape}")
    if builtins.any(m > n for i, (m, n) in enumerate(zip(index.shape, a.data.shape)) if i != d):
        raise shape_error("gather", (a,), f"index shape {index.shape} exceeds the tensor's on an axis other than {d}")
    picks = _along(index, d)
    try:
        out = a.data[picks]
    except IndexError as e:
        raise shape_error("gather", (a,), str(e)) from None
    shape, dtype = a.data.shape, a.data.dtype
    def backward(g):
        gx = np.zeros(shape, dtype)
        np.add.at(gx, picks, g)
        return (gx,)
    return result(out, GATHER, (a,), backward)


# --- comparisons, Python protocols, views -------------------------------------------------------------

def _comparison(name, ufunc):
    """An elementwise comparison: a boolean tensor outside the graph (it has no gradient), as torch."""
    def compare(a, other):
        if isinstance(other, Tensor):
            other = other.data
        elif not isinstance(other, (int, float, bool, np.ndarray, np.generic, list)):
            return NotImplemented  # a == None or a == "x": Python falls back to identity
        try:
            return Tensor(ndarray(ufunc(a.data, other)))
        except ValueError:
            raise shape_error(name, (a,), f"cannot compare with shape {np.shape(other)}") from None
    compare.__name__ = name
    return compare


CLONE = Op("clone", saves=())


def clone(a):
    """A copy of a's array that stays in the graph (torch.clone: the gradient passes through unchanged)."""
    return result(a.data.copy(), CLONE, (a,), lambda g: (g,))


def view_as(a, *shape):
    """torch's view: a reshape that always shares memory here (numpy arrays reshape as views or fail)."""
    return reshape(a, *shape)


def unsqueeze(a, dim):
    """A size-1 axis inserted at dim (negative dims count from the end of the result, as torch)."""
    ndim = a.data.ndim + 1
    if not -ndim <= dim < ndim:
        raise shape_error("unsqueeze", (a,), f"dim {dim} is out of range for {ndim} dimensions")
    shape = list(a.data.shape)
    shape.insert(dim % ndim, 1)
    return reshape(a, tuple(shape))


def squeeze(a, dim=None):
    """Size-1 axes removed: all of them, or only dim if its size is 1 (torch leaves other sizes alone)."""
    shape = a.data.shape
    if dim is None:
        return reshape(a, tuple(n for n in shape if n != 1))
    if a.data.ndim == 0:
        return reshape(a, ())
    d = _dim("squeeze", a, dim)
    return reshape(a, shape[:d] + shape[d + 1:]) if shape[d] == 1 else reshape(a, shape)


def flatten(a, start_dim=0, end_dim=-1):
    """Axes start_dim..end_dim merged into one (torch.flatten; a 0-d tensor becomes 1-D)."""
    shape = a.data.shape
    if not shape:
        return reshape(a, (1,))
    start, end = _dim("flatten", a, start_dim), _dim("flatten", a, end_dim)
    return reshape(a, shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])


EXPAND = Op("expand", saves=(), view=True)


def expand(a, *sizes):
    """a broadcast to sizes (−1 keeps an axis); a read-only view; backward sums over the broadcast axes."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    old = a.data.shape
    lead = len(sizes) - len(old)
    if lead < 0:
        raise shape_error("expand", (a,), f"cannot expand to fewer dimensions {sizes}")
    shape = tuple(old[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes))
    try:
        out = np.broadcast_to(a.data, shape)
    except ValueError:
        raise shape_error("expand", (a,), f"cannot expand to {sizes}") from None
    return view(result(out, EXPAND, (a,), lambda g: (unbroadcast(g, old),)), a)


def _arg_extremum(reduce):
    def arg(a, axis=None, keepdims=False):
        """The index of the extremum (flattened when axis is None), an int64 tensor outside the graph."""
        axis = reduced_axis(reduce.__name__, a, axis)
        out = reduce(a.data, axis=axis, keepdims=keepdims and axis is not None)
        return Tensor(ndarray(out).astype(np.int64, copy=False))
    arg.__name__ = reduce.__name__
    return arg


argmax, argmin = _arg_extremum(np.argmax), _arg_extremum(np.argmin)


# --- factory functions (torch.zeros & co.; float32 by default, as torch) ------------------------------

def _size(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def zeros(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(_size(shape), dtype), requires_grad=requires_grad)


def ones(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.ones(_size(shape), dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.full(_size((shape,)), fill_value, dtype), requires_grad=requires_grad)


def zeros_like(a, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.zeros_like(a.data, dtype), requires_grad=requires_grad)


def ones_like(a, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.ones_like(a.data, dtype), requires_grad=requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False, seed=None) -> Tensor:
    """Standard normal samples (numpy's default_rng(seed): reproducible when seeded)."""
    values = np.random.default_rng(seed).standard_normal(_size(shape)).astype(dtype)
    return Tensor(values, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None) -> Tensor:
    """torch.arange: int64 for integer arguments, float32 if any is a float."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        whole = builtins.all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if whole else np.float32
    return Tensor(np.arange(start, end, step, dtype=np.float64 if dtype == np.float32 else dtype).astype(dtype))


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
    cls.__abs__ = abs
    cls.__pow__ = pow  # a number or a tensor exponent, as torch
    cls.__rpow__ = lambda self, base: tensor_pow(as_tensor(base, self), self)
    cls.__matmul__ = matmul
    cls.__rmatmul__ = lambda self, other: matmul(as_tensor(other, self), self)
    cls.__getitem__ = getitem
    for fn in (sum, mean, max, min, exp, log, tanh, sigmoid, relu, softmax, log_softmax, reshape, transpose,
               permute, split, chunk, clone, unsqueeze, squeeze, flatten, expand, argmax, argmin, pow, sqrt, rsqrt,
               abs, sin, cos, clamp, clip, maximum, minimum, logsumexp, var, std, cumsum, flip, repeat, gather,
               masked_fill, softplus, logsigmoid, silu, gelu, leaky_relu):
        setattr(cls, fn.__name__, fn)
    cls.T = property(lambda self: transpose(self))
    cls.mT = property(matrix_transpose)
    cls.where = lambda self, condition, other: where(condition, self, other)  # torch: self if condition else other
    cls.view = view_as
    cls.clip = clamp
    for name, ufunc in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                        ("gt", np.greater), ("ge", np.greater_equal)):
        compare = _comparison(name, ufunc)
        setattr(cls, name, compare)
        setattr(cls, f"__{name}__", compare)  # Tensor == Tensor too, elementwise (torch)
    # (__hash__ stays identity: tensor.py sets it, as torch's; sets and dicts check identity first, so they
    # still find tensors, while `t in a_list` compares elementwise, as in torch: look nodes up by identity)


install_methods(Tensor)
