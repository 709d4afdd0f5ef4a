"""Tensor, Parameter, no_grad and the backward walk.

A Tensor is a node of the recorded graph: its numpy value (`data`), the op that made it (`op`),
its inputs (`parents`, a tuple in argument order so drawings keep their order) and a closure
`_backward(g) -> grads per parent` written right beside the op's forward in `ops.py`.

Backward walks the graph in an iterative topological order (unrolled graphs are thousands of
nodes deep, so no recursion anywhere) and sums gradients, never assigns them: a weight used at
T steps receives T contributions.
"""
import numpy as np

from .lazy import OuterSum

# Recording state, read by every op: module globals are the cheapest lookup Python has.
_grad_enabled = True
_step = None  # the active Unroll step (set by Unroll.step), or None outside steps


class GraphFreedError(RuntimeError):
    pass


class Tensor:
    __slots__ = ("data", "_grad", "requires_grad", "name", "step", "parents", "op",
                 "_backward", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # make numpy defer to our reflected operators (array + Tensor)

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            data = np.asarray(data, dtype=dtype)
        elif isinstance(data, (np.ndarray, np.generic)):
            data = np.asarray(data)
            if data.dtype.kind == "f" and data.dtype not in (np.float32, np.float64):
                data = data.astype(np.float32)  # float16 and friends: compute in float32
        else:
            data = np.asarray(data)  # Python numbers and lists: float32 like PyTorch
            if data.dtype == np.float64:
                data = data.astype(np.float32)
        if data.dtype == object:
            raise TypeError("Tensor: data must be numbers or a numeric array, not objects")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got dtype {data.dtype} "
                            "(pass dtype=np.float32 or float data)")
        self.data = data
        self._grad = None
        self.requires_grad = requires_grad
        self.name = name
        self.step = _step.t if _step is not None else None
        self.parents = ()
        self.op = None
        self._backward = None
        self._retains_grad = requires_grad  # leaves that require grad keep their gradient

    # --- plain attributes -------------------------------------------------------------------
    @property
    def grad(self):
        g = self._grad
        if type(g) is OuterSum:  # a gradient kept as factors is formed on first read
            g = self._grad = g.value()
        return g

    @grad.setter
    def grad(self, value):
        self._grad = None if value is None else np.asarray(value)

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: not self.parents)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph (truncated BPTT carries states so)."""
        return Tensor(self.data, name=self.name)

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in `.grad` after backward (as PyTorch's retain_grad)."""
        self._retains_grad = True
        return self

    def __repr__(self):
        extras = "".join([f", name={self.name!r}" if self.name else "",
                          f", step={self.step}" if self.step is not None else "",
                          f", op={self.op!r}" if self.op else "",
                          ", requires_grad=True" if self.requires_grad else ""])
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{extras})"

    def __bool__(self):
        raise TypeError("Tensor: truth value is ambiguous; compare .item() or .data instead")

    __hash__ = object.__hash__

    def backward(self, grad=None, retain_graph=False):
        backward(self, grad, retain_graph)


class Parameter(Tensor):
    """A Tensor that requires grad: a model's weight (a leaf the optimizer updates)."""
    __slots__ = ()

    def __init__(self, data, name=None, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)


def result(data, op, inputs, backward):
    """Wrap an op's output; record how to send its gradient back when any input requires grad.

    Inside an Unroll step, each shared parameter among `inputs` is replaced by its per-step copy
    W(t), so the graph holds one explicit node per use in time while the forward reuses W's array.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out._grad = None
    out.name = None
    out._retains_grad = False
    step = _step
    out.step = None if step is None else step.t
    if _grad_enabled:
        for x in inputs:
            if x.requires_grad:
                break
        else:
            backward = None
    else:
        backward = None
    if backward is None:
        out.requires_grad = False
        out.parents = ()
        out.op = None
        out._backward = None
        return out
    out.requires_grad = True
    out.parents = inputs if step is None else step.substitute(inputs)
    out.op = op
    out._backward = backward
    return out


def topological_order(root):
    """Nodes that need a gradient, each after all of its inputs (iterative depth-first post-order)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for parent in node.parents:
            if parent.requires_grad and parent not in visited:
                stack.append((parent, False))
    return order


def accumulate(old, new):
    """Sum two gradients; factored weight gradients stay factored as long as both are."""
    if old is None:
        return new
    if type(old) is OuterSum or type(new) is OuterSum:
        if type(old) is OuterSum and type(new) is OuterSum:
            return old.merged(new)
        old = old.value() if type(old) is OuterSum else old
        new = new.value() if type(new) is OuterSum else new
    return old + new


def backward(root, grad=None, retain_graph=False):
    """Reverse-mode sweep from `root`: fill `.grad` of leaves (and retained nodes, e.g. W(t) copies)."""
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad (no input of its graph has "
                           "requires_grad=True, or it was computed under no_grad())")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward: grad can be implicitly created only for scalar outputs; "
                               f"this tensor has shape {root.shape}, so pass backward(grad=...) of that shape")
        grad = np.ones_like(root.data)
    else:
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=root.dtype)
        if grad.shape != root.shape:
            raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has shape {root.shape}")
    order = topological_order(root)
    for node in order:  # check before touching any .grad: a failing backward changes nothing
        if node.parents and node._backward is None:
            raise GraphFreedError(
                f"backward: trying to backward through the graph a second time (node {node.op!r}"
                f"{'' if node.step is None else f' at step {node.step}'}): its saved values were freed "
                "after the first backward. Pass retain_graph=True to the first backward, or recompute "
                "the forward (in truncated BPTT, detach() the carried state).")
    grads = {root: grad}
    touched = []
    for node in reversed(order):
        g = grads.pop(node, None)
        if g is None:
            continue
        if node._retains_grad:
            node._grad = _owned(accumulate(node._grad, g), node)
            touched.append(node)
        if not node.parents:
            continue
        if type(g) is OuterSum and node.op != "copy":  # only a copy passes factors through as they are
            g = g.value()
        for parent, pg in zip(node.parents, node._backward(g)):
            if pg is not None and parent.requires_grad:
                grads[parent] = accumulate(grads.get(parent), pg)
    for node in touched:  # leaves get one dense array; copies keep factors until someone reads them
        if not node.parents and type(node._grad) is OuterSum:
            node._grad = node._grad.value()
    if not retain_graph:
        for node in order:
            if node.parents and node.op != "copy":  # copies save nothing and stay usable in their step
                node._backward = None


def _owned(g, node):
    """A first gradient stored in .grad may be a buffer other nodes also hold (add passes its `g` to
    both inputs): copy it, so that in-place updates of one .grad never change another."""
    if type(g) is OuterSum:
        return g
    if node._grad is None or g.dtype != node.data.dtype:
        return np.array(g, dtype=node.data.dtype)
    return g


class no_grad:
    """Context manager (and decorator): nothing computed inside is recorded for backward."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped


def is_grad_enabled():
    return _grad_enabled


def _set_step(step):
    """Used by Unroll.step: the step whose copies ops should use (None to leave steps)."""
    global _step
    previous, _step = _step, step
    return previous


def current_step():
    return _step


from . import ops as _ops  # noqa: E402  (ops build on Tensor; Tensor's methods are those ops)

_ops.install_methods(Tensor)
