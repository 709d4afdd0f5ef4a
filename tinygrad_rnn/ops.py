"""The primitives: each op's forward and its backward side by side.

Every op computes its value with numpy and hands `result` a closure `backward(g)` that returns
one gradient per input (None where an input needs none). Closures capture arrays, never the
output tensor, so freeing a graph is dropping its closures. Broadcasting is undone in exactly
one place, `unbroadcast`.
"""
import math

import numpy as np

from .lazy import OuterSum
from . import tensor as _tensor
from .tensor import Tensor, result, shape_error


def unbroadcast(grad, shape):
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


def add(a, b):
    b = as_tensor(b, a)
    sa, sb = a.data.shape, b.data.shape
    if sa == sb:  # no broadcasting: the gradient passes to both unchanged (no closure to make)
        return result(elementwise("add", np.add, a, b), "add", (a, b), _same)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(g, sb)
    return result(elementwise("add", np.add, a, b), "add", (a, b), backward)


def sub(a, b):
    b = as_tensor(b, a)
    sa, sb = a.data.shape, b.data.shape
    if sa == sb:
        return result(elementwise("sub", np.subtract, a, b), "sub", (a, b), _same_negated)
    def backward(g):
        return unbroadcast(g, sa), unbroadcast(-g, sb)
    return result(elementwise("sub", np.subtract, a, b), "sub", (a, b), backward)


def mul(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    need_x, need_y = a.requires_grad, b.requires_grad
    def backward(g):
        return (unbroadcast(g * y, x.shape) if need_x else None,
                unbroadcast(g * x, y.shape) if need_y else None)
    return result(elementwise("mul", np.multiply, a, b), "mul", (a, b), backward)


def div(a, b):
    b = as_tensor(b, a)
    x, y = a.data, b.data
    def backward(g):
        gx = g / y
        return unbroadcast(gx, x.shape), unbroadcast(-gx * x / y, y.shape)
    return result(elementwise("div", np.divide, a, b), "div", (a, b), backward)


def neg(a):
    return result(-a.data, "neg", (a,), lambda g: (-g,))


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
    return result(x ** exponent, "pow", (a,), backward)


# --- matrix product -----------------------------------------------------------------------------

def _matmul_mismatch(x, w):
    if x.ndim == 0 or w.ndim == 0:
        return "matmul needs at least 1-D operands; use * for scalars"
    inner = w.shape[-2 if w.ndim > 1 else 0]
    if x.shape[-1] != inner:
        return f"inner dimensions {x.shape[-1]} and {inner} differ"
    return "batch dimensions cannot be broadcast together"


def _factored(w):
    """A 2-D weight whose gradient ends at a leaf or a per-step copy gets it as factors (xᵀ, g): the
    copies of W over all steps then meet at W as one stacked GEMM (see lazy.py)."""
    return w.data.ndim == 2 and (w.op is None or w.op == "copy")


def transposed(w):
    """wᵀ as a C-contiguous array, made once per backward and shared by every step that uses w (the
    sweep opens the cache): BLAS multiplies by a contiguous operand up to twice as fast (g·Wᵀ at B = 32,
    d = 128: 6 µs instead of 14 µs). Outside a backward (e.g. a hand-called closure), the plain view."""
    cache = _tensor._transposes
    if cache is None:
        return w.T
    hit = cache.get(id(w))
    if hit is None:
        hit = cache[id(w)] = (w, np.ascontiguousarray(w.T))  # (w kept: its id cannot be reused meanwhile)
    return hit[1]


def weight_grad(x, g, factored, snapshot):
    """∂L/∂w of x @ w for 2-D (or 1-D) x and g: xᵀ g, or its factors (OuterSum) when factored.
    A copy's factored gradient is formed later, when read: a leaf's array (an input batch, a learned
    s0) may be updated in place by then, so that factor is snapshotted (`snapshot`); graph values are not."""
    if not factored:
        return np.outer(x, g) if x.ndim == 1 else x.T.dot(g)
    if x.ndim == 1:
        x, g = x[None, :], g[None, :]
    return OuterSum([x.copy() if snapshot else x], [g])


def matmul(a, b):
    b = as_tensor(b, a)
    x, w = a.data, b.data
    try:
        y = x.dot(w) if x.ndim == 2 and w.ndim == 2 else x @ w  # (dot: half the cost on tiny arrays)
    except ValueError:  # numpy checks the shapes; we only explain what it found (no extra work per call)
        raise shape_error("matmul", (a, b), _matmul_mismatch(x, w)) from None
    factored = _factored(b)
    need_x, need_w = a.requires_grad, b.requires_grad  # a constant input x(t) needs no gradient
    snapshot = a.op is None
    if x.ndim == 2 and w.ndim == 2:  # the recurrent cell's shapes: the short path (ndarray.dot = @ here)
        def backward(g):
            return (g.dot(transposed(w)) if need_x else None,
                    weight_grad(x, g, factored, snapshot) if need_w else None)
        return result(y, "matmul", (a, b), backward)

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
        elif factored:
            gw = weight_grad(x2.reshape(-1, x2.shape[-1]), g2.reshape(-1, g2.shape[-1]), True, snapshot)
        else:
            gw = unbroadcast(np.swapaxes(x2, -1, -2) @ g2, w2.shape).reshape(w.shape)
        return gx, gw
    return result(y, "matmul", (a, b), backward)


def affine(terms, bias=None):
    """Σ_i x_i @ w_i + bias as ONE node: the lecture's a_t = x_t U + s_{t−1} W + b.

    terms: [(x_1, w_1), (x_2, w_2), ...] with 1-D or 2-D x_i and 2-D w_i; inputs in that order, bias last.
    One node instead of 2n (matmuls and adds): the walk does less, and no intermediate (x U, s W, their
    sum) is kept alive by the graph. Its gradient is each matmul's, side by side.
    """
    inputs, saved, y = [], [], None
    for x, w in terms:
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
        # (x, w, ∂x needed, ∂w needed, ∂w as factors (see weight_grad), snapshot x for those factors)
        saved.append((xd, wd, x.requires_grad, w.requires_grad, w.op is None or w.op == "copy", x.op is None))
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
        for x, w, need_x, need_w, factored, snapshot in saved:
            grads.append(g.dot(transposed(w)) if need_x else None)
            grads.append(weight_grad(x, g, factored, snapshot) if need_w else None)
        if bias_shape is not None:
            grads.append(unbroadcast(g, bias_shape))
        return grads
    return result(y, "affine", tuple(inputs), backward)


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


def sum(a, axis=None, keepdims=False):
    shape = a.data.shape
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims), shape),)
    return result(np.asarray(a.data.sum(axis=axis, keepdims=keepdims)), "sum", (a,), backward)


def mean(a, axis=None, keepdims=False):
    shape = a.data.shape
    out = np.asarray(a.data.mean(axis=axis, keepdims=keepdims))
    count = a.data.size // (out.size or 1)  # (this module shadows the builtins sum, max and pow)
    def backward(g):
        return (np.broadcast_to(_expand_like(g, shape, axis, keepdims) / count, shape),)
    return result(out, "mean", (a,), backward)


def max(a, axis=None, keepdims=False):
    x = a.data
    out = np.asarray(x.max(axis=axis, keepdims=keepdims))
    def backward(g):
        # ties share the gradient evenly (as torch.amax does)
        hit = x == _expand_like(out, x.shape, axis, keepdims)
        share = (hit / hit.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)
        return (share * _expand_like(g, x.shape, axis, keepdims),)
    return result(out, "max", (a,), backward)


# --- elementwise functions ---------------------------------------------------------------------

def exp(a):
    y = np.exp(a.data)
    return result(y, "exp", (a,), lambda g: (g * y,))


def log(a):
    x = a.data
    return result(np.log(x), "log", (a,), lambda g: (g / x,))


def tanh(a):
    y = np.tanh(a.data)
    return result(y, "tanh", (a,), lambda g: (g * (1 - y * y),))


def sigmoid(a):
    x = a.data
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return result(y, "sigmoid", (a,), lambda g: (g * y * (1 - y),))


def relu(a):
    x = a.data
    return result(np.maximum(x, 0), "relu", (a,), lambda g: (g * (x > 0),))


def softmax(a, axis=-1):
    x = a.data
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return result(y, "softmax", (a,), backward)


def log_softmax(a, axis=-1):
    x = a.data
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    def backward(g):
        return (g - np.exp(y) * g.sum(axis=axis, keepdims=True),)
    return result(y, "log_softmax", (a,), backward)


_ROWS = {}


def _row_numbers(n):
    """np.arange(n), cached: cross-entropy picks one entry per row at every step."""
    rows = _ROWS.get(n)
    if rows is None:
        rows = _ROWS[n] = np.arange(n)
        rows.flags.writeable = False
    return rows


def cross_entropy(logits, targets, reduction="mean"):
    """−log softmax(logits)[target] per row; its backward is the notes' p − onehot(target).

    logits (B, k) with integer targets (B,), or logits (k,) with one integer target.
    """
    z = logits.data
    targets = np.array(targets)  # our own copy: the caller may refill its target buffer before backward
    pick = (_row_numbers(z.shape[0]), targets) if z.ndim == 2 else (targets,)
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    losses = np.log(total[..., 0]) - shifted[pick]
    out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    def backward(g):
        dz = e / total                   # p
        dz[pick] -= 1                    # p − onehot
        if reduction == "none" and z.ndim == 2:
            return (dz * g[:, None],)
        return (dz * (g / losses.size if reduction == "mean" else g),)
    return result(np.asarray(out, dtype=z.dtype), "cross_entropy", (logits,), backward)


def binary_cross_entropy(probs, targets, reduction="mean"):
    """−[t log p + (1 − t) log(1 − p)] elementwise; as in PyTorch each log is clamped at −100, so a
    saturated p (float32 sigmoid(40) is exactly 1) gives a finite loss and gradient, not NaN."""
    p, t = probs.data, targets
    with np.errstate(divide="ignore"):
        log_p, log_q = np.maximum(np.log(p), -100), np.maximum(np.log1p(-p), -100)
    losses = -(t * log_p + (1 - t) * log_q)
    out = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    def backward(g):
        dp = (p - t) / np.maximum(p * (1 - p), 1e-12)
        return (dp * (g / losses.size if reduction == "mean" else g),)
    return result(np.asarray(out, dtype=p.dtype), "binary_cross_entropy", (probs,), backward)


# --- shape ----------------------------------------------------------------------------------------

def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    old = a.data.shape
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise shape_error("reshape", (a,), f"cannot reshape {a.data.size} elements into {shape}") from None
    return view(result(out, "reshape", (a,), lambda g: (g.reshape(old),)), a)


def transpose(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(axis % a.data.ndim for axis in axes) or None  # negative axes name the same axes
    inverse = None if axes is None else tuple(np.argsort(axes))
    return view(result(np.transpose(a.data, axes), "transpose", (a,), lambda g: (np.transpose(g, inverse),)), a)


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
    out = result(a.data[index], "getitem", (a,), backward)
    return out if advanced else view(out, a)


def split(a, sections, axis=-1):
    """np.split(a, sections, axis) as one node per piece, the pieces sharing one backward (a multi-output op,
    see tensor.StepBatch): ∂L/∂a is the pieces' gradients side by side, one array — not, as indexing each
    piece would give, a zero-filled array of a's full size per piece. For gates: `i, f, g, o = split(z, 4)`."""
    x = a.data
    try:
        pieces = np.split(x, sections, axis=axis)
    except (ValueError, IndexError, TypeError) as e:
        raise shape_error("split", (a,), str(e)) from None
    step = _tensor._step
    t = None if step is None else step.t
    parents = (a,) if step is None else step.substitute((a,))

    def backward(gs):
        whole = np.concatenate([np.zeros(p.shape, x.dtype) if g is None else g for g, p in zip(gs, pieces)],
                               axis=axis)
        first = next(i for i, g in enumerate(gs) if g is not None)  # a live member carries the one gradient
        return [(whole,) if i == first else None for i in range(len(gs))]
    members = _tensor.step_results(pieces, "split", [parents] * len(pieces), [t] * len(pieces), backward)
    for m in members:
        view(m, a)
    return members


def view(out, a):
    """out's array is a numpy view of a's (basic indexing, reshape, transpose): they share one version
    box, so an in-place update through either is seen by backward's saved-value check."""
    base = out.data.base
    if base is not None and (base is a.data or base is a.data.base):
        out._versions = _tensor.shared_versions(a)
    return out


def _tensor_list(op, items):
    items = list(items)
    like = next((t for t in items if isinstance(t, Tensor)), None)
    if like is None:
        raise ValueError(f"{op}: expects a non-empty list with at least one Tensor")
    return [as_tensor(t, like) for t in items]


def stack(tensors, axis=0):
    tensors = _tensor_list("stack", tensors)
    def backward(g):
        return tuple(g if axis == 0 else np.moveaxis(g, axis, 0))
    if len({t.data.shape for t in tensors}) != 1:
        raise shape_error("stack", tensors, "stack needs equal shapes")
    return result(np.stack([t.data for t in tensors], axis=axis), "stack", tuple(tensors), backward)


def concat(tensors, axis=0):
    tensors = _tensor_list("concat", tensors)
    try:
        joined = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise shape_error("concat", tensors, str(e)) from None
    bounds = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]
    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))
    return result(joined, "concat", tuple(tensors), backward)


def copy(p, step, parents=None):
    """The per-step copy P(t) of a shared parameter: identity both ways, the same array as P.

    Its gradient is ∂L/∂P(t); the walk keeps it in `.grad` and passes it on unchanged to P, where
    the copies' gradients sum to ∂L/∂P. It saves nothing, so freeing a graph leaves it usable.
    parents: the tuple (P,), which a tape shares between all copies of P (one object fewer per copy).
    """
    out = Tensor.__new__(Tensor)
    out.data, out._grad, out.requires_grad = p.data, None, p.requires_grad
    out.name, out.step, out.parents, out.op = f"{p.name or 'param'}({step})", step, parents or (p,), "copy"
    out._backward, out._retains_grad = _tensor._identity, True
    out._epoch, out._versions, out._id = _tensor._inplace_epoch, None, _tensor._next_id()
    return out


# Ops whose last input, when their input count is odd, is a bias: its value is never read by backward.
BIAS_LAST = ("affine", "linear")

# Which values each op's backward reads (its inputs', its output's): an in-place update of anything else
# after the forward is harmless, so backward's saved-value check looks only at these (as PyTorch does).
SAVES = {
    "add": (False, False), "sub": (False, False), "neg": (False, False), "sum": (False, False),
    "mean": (False, False), "reshape": (False, False), "transpose": (False, False), "getitem": (False, False),
    "stack": (False, False), "concat": (False, False), "split": (False, False), "copy": (False, False), "cross_entropy": (False, False),
    "mul": (True, False), "div": (True, False), "pow": (True, False), "matmul": (True, False),
    "affine": (True, False), "linear": (True, False),
    "log": (True, False), "relu": (True, False), "binary_cross_entropy": (True, False), "max": (True, True),
    "exp": (False, True), "tanh": (False, True), "sigmoid": (False, True), "softmax": (False, True),
    "log_softmax": (False, True),
}


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
