"""∂L/∂· of the recorded intermediate tensors (s(t), a(t), y(t), gates…) without `retain_grad()`.

A plain `L.backward()` keeps gradients on leaves and copies W(t) only. viz gets the others back from what
the graph still holds after backward — every tensor's value and every copy's gradient — in float64,
touching nobody's `.grad`:

1. A reverse sweep over the walk (the same topological order backward used): a tensor's gradient is
   the sum over the ops that use it of that op's vector-Jacobian product, for the ops whose VJP follows
   from values alone (add, mul, tanh, affine, linear, split, stack, sum, …; table `_VJPS`).
2. Where the sweep meets an op whose VJP needs more than values (cross_entropy needs its targets), the
   tensor below it is recovered from the copies that enter it instead: for y = x₁ W₁(t) + … + c(t), the
   engine's own ∂L/∂W_i(t) = x_iᵀ ∂L/∂y and ∂L/∂c(t) = Σ_rows ∂L/∂y determine ∂L/∂y by least squares
   whenever [x₁ … 1] has full row rank (one sequence: always). It is accepted only when that system is
   consistent, and each copy must be used by that op alone.
3. A tensor that neither way reaches stays None: "not recorded", drawn apart from a true zero.

A tensor that kept its own gradient (a leaf, a copy, retain_grad) is read as it is, so the engine's own
numbers replace the recovered ones wherever they exist: `keep_gradients(L)` before `L.backward()` asks the
engine to keep every intermediate's gradient (retain_grad on each), which also covers the ops this module
has no rule for (softmax, gelu, …, drawn "not recorded" after a plain backward).
"""
import numpy as np

from tinygrad_rnn.ops import unbroadcast

from .graph import is_copy, walk


def keep_gradients(roots):
    """Call before backward: every recorded non-leaf tensor behind `roots` (the loss L, a list of tensors
    or an RNNOutput) keeps its gradient (`retain_grad()`), so a drawing shows the engine's own ∂L/∂s(t),
    ∂L/∂a(t), … for every op, not viz's reconstruction. Costs one gradient array per node. Returns roots."""
    for t in walk(roots).nodes:
        if t.parents and t.requires_grad:
            t.retain_grad()
    return roots


def recorded_gradients(graph):
    """{position in graph.nodes: ∂L/∂tensor as a float64 array, or None when it cannot be known}, for every
    tensor of `graph` (a viz.graph.RecordedGraph) that has parents; {} when no backward has run."""
    nodes, index = graph.nodes, graph.index
    own = [_own_grad(t) for t in nodes]
    if not any(g is not None for g in own):
        return {}
    users = {}  # position -> [(user position, argument number)]
    for j, t in enumerate(nodes):
        for n, p in enumerate(t.parents):
            users.setdefault(index[p], []).append((j, n))
    roots = {index[r] for r in graph.roots}
    grads = {}
    for i in range(len(nodes) - 1, -1, -1):
        t = nodes[i]
        if own[i] is not None:
            grads[i] = own[i]
        elif not t.parents:
            continue  # a constant: nothing to colour
        elif i in roots and not users.get(i):
            grads[i] = np.ones(t.shape) if t.shape == () or t.size == 1 else None
        else:
            grads[i] = _swept(i, nodes, users.get(i, ()), grads)
            if grads[i] is None:
                grads[i] = _recovered(t, users, index, own)
    return {i: g for i, g in grads.items() if nodes[i].parents}


def _own_grad(t):
    g = t.grad if t.requires_grad or t.parents else None
    return None if g is None else np.asarray(g, dtype=np.float64)


def _swept(i, nodes, uses, grads):
    total = np.zeros(nodes[i].shape)
    for j, n in uses:
        g = grads.get(j)
        vjp = _VJPS.get(nodes[j].op)
        part = None if g is None or vjp is None else vjp(nodes[j], n, g)
        if part is None:
            return None
        total = total + part
    return total


def _recovered(t, users, index, own):
    """∂L/∂t from the gradients of the copies entering t (step 2 of the module docstring), or None."""
    terms, bias = _weighted_inputs(t)
    if terms is None:
        return None
    rows, rhs = [], []
    for x, w in terms:
        if not is_copy(w) or len(users.get(index[w], ())) != 1 or own[index[w]] is None:
            continue
        X = np.asarray(x.data, dtype=np.float64).reshape(-1, x.shape[-1])  # (B, m)
        rows.append(X.T)
        rhs.append(own[index[w]].reshape(X.shape[1], -1))
    if bias is not None and is_copy(bias) and len(users.get(index[bias], ())) == 1 \
            and own[index[bias]] is not None and bias.data.ndim == 1:
        B = int(np.prod(t.shape[:-1], dtype=int)) if t.ndim > 1 else 1
        rows.append(np.ones((1, B)))
        rhs.append(own[index[bias]].reshape(1, -1))
    if not rows:
        return None
    A, R = np.vstack(rows), np.vstack(rhs)
    G, _, rank, _ = np.linalg.lstsq(A, R, rcond=None)
    scale = max(1.0, float(np.abs(R).max()))
    if rank < A.shape[1] or float(np.abs(A @ G - R).max()) > 1e-5 * scale:  # inconsistent: not this op's alone
        return None
    return G.reshape(t.shape)


def _weighted_inputs(t):
    """([(x, w)], bias) of an affine or linear node, else (None, None)."""
    if t.op == "affine":
        k = len(t.parents)
        pairs = [(t.parents[n], t.parents[n + 1]) for n in range(0, k - 1, 2)]
        return pairs, t.parents[-1] if k % 2 else None
    if t.op == "linear":
        return [(t.parents[0], t.parents[1])], t.parents[2] if len(t.parents) > 2 else None
    return None, None


# --- vector-Jacobian products from values: (node, argument number, ∂L/∂node) -> ∂L/∂argument ---------

def _value(t):
    return np.asarray(t.data, dtype=np.float64)


def _elementwise(rule):
    def vjp(node, n, g):
        a, b = (_value(p) for p in node.parents)
        return unbroadcast(np.broadcast_to(rule(n, a, b, g), np.broadcast_shapes(a.shape, b.shape)),
                           node.parents[n].shape)
    return vjp


def _matmul_term(x, w, g, n):
    """∂ of x @ w for argument n (0: x, 1: w), x 1-D or 2-D, w 2-D."""
    X, W = _value(x), _value(w)
    if W.ndim != 2 or X.ndim not in (1, 2):
        return None
    G = g.reshape(-1, W.shape[1])
    if n == 0:
        return (G @ W.T).reshape(X.shape)
    return X.reshape(-1, W.shape[0]).T @ G


def _affine(node, n, g):
    k = len(node.parents)
    if k % 2 and n == k - 1:
        return unbroadcast(g, node.parents[n].shape)
    first = n - n % 2
    return _matmul_term(node.parents[first], node.parents[first + 1], g, n % 2)


def _linear(node, n, g):
    if n == 2:
        return unbroadcast(g, node.parents[2].shape)
    return _matmul_term(node.parents[0], node.parents[1], g, n)


def _matmul(node, n, g):
    return _matmul_term(node.parents[0], node.parents[1], g, n)


def _reduced(node, n, g, mean):
    x = node.parents[0]
    out = node.shape
    if out == ():
        axes = tuple(range(x.ndim))
    elif len(out) == x.ndim:
        axes = tuple(k for k in range(x.ndim) if out[k] == 1 and x.shape[k] != 1)
    else:
        return None  # an axis removed: which one the shapes do not always tell
    count = int(np.prod([x.shape[k] for k in axes], dtype=int)) if mean else 1
    return np.broadcast_to(np.reshape(g, [1 if k in axes else x.shape[k] for k in range(x.ndim)]),
                           x.shape) / count


def _stack(node, n, g):
    """stack: the axis is the one along which the result's slice n is argument n (checked by value)."""
    part = _value(node.parents[n])
    for k in range(node.ndim):
        if node.shape[k] == len(node.parents) and np.array_equal(np.take(_value(node), n, axis=k), part):
            return np.take(g, n, axis=k)
    return None


def _piece(node, n, g):
    """split: the piece is a numpy view of its parent, so where it sits follows from its address."""
    whole, piece = node.parents[0].data, node.data
    offset = piece.__array_interface__["data"][0] - whole.__array_interface__["data"][0]
    axes = [k for k in range(whole.ndim) if piece.shape[k] != whole.shape[k]]
    if piece.ndim != whole.ndim or len(axes) > 1 or (axes and offset % whole.strides[axes[0]]):
        return None
    full = np.zeros(whole.shape)
    if not axes:
        full[...] = g
        return full
    start = offset // whole.strides[axes[0]]
    where = [slice(None)] * whole.ndim
    where[axes[0]] = slice(start, start + piece.shape[axes[0]])
    full[tuple(where)] = g
    return full


_VJPS = {
    "add": _elementwise(lambda n, a, b, g: g),
    "sub": _elementwise(lambda n, a, b, g: g if n == 0 else -g),
    "mul": _elementwise(lambda n, a, b, g: g * (b if n == 0 else a)),
    "div": _elementwise(lambda n, a, b, g: g / b if n == 0 else -g * a / (b * b)),
    "neg": lambda node, n, g: -g,
    "tanh": lambda node, n, g: g * (1 - _value(node) ** 2),
    "sigmoid": lambda node, n, g: g * _value(node) * (1 - _value(node)),
    "relu": lambda node, n, g: g * (_value(node.parents[0]) > 0),
    "exp": lambda node, n, g: g * _value(node),
    "log": lambda node, n, g: g / _value(node.parents[0]),
    "affine": _affine,
    "linear": _linear,
    "matmul": _matmul,
    "sum": lambda node, n, g: _reduced(node, n, g, mean=False),
    "mean": lambda node, n, g: _reduced(node, n, g, mean=True),
    "stack": _stack,
    "split": _piece,
    "reshape": lambda node, n, g: np.reshape(g, node.parents[0].shape),
}
