"""Tensor, Parameter, no_grad and the backward walk.

A Tensor is a node of the recorded graph: its numpy value (`data`), the op that made it (`op`),
its inputs (`parents`, a tuple in argument order so drawings keep their order) and a closure
`_backward(g) -> grads per parent` written right beside the op's forward in `ops.py`.

Backward walks the graph in an iterative topological order (unrolled graphs are thousands of
nodes deep, so no recursion anywhere) and sums gradients, never assigns them: a weight used at
T steps receives T contributions.
"""
import functools
import gc
import itertools
import operator
import weakref

import numpy as np

from .errors import GraphFreedError, InplaceError, ShapeError
from .lazy import OuterSum

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_ndarray = np.ndarray

# Recording state, read by every op: module globals are the cheapest lookup Python has.
_grad_enabled = True
_step = None         # the active Unroll step (set by Unroll.step), or None outside steps
_anomaly = None      # the active detect_anomaly() (anomaly.py), or None
_transposes = None   # during a backward sweep: {id(w): (w, contiguous wᵀ)} (see ops.transposed)
_inplace_epoch = 0   # counts in-place updates; a node remembers the count at its creation (`_epoch`)
# Every node gets the next number when it is made: inputs always exist before the node that uses them,
# so sorting by it is a topological order (no recursion, no post-order bookkeeping; see topological_order).
_next_id = itertools.count().__next__
_creation = operator.attrgetter("_id")


class Tensor:
    __slots__ = ("data", "_grad", "requires_grad", "name", "step", "parents", "op",
                 "_backward", "_retains_grad", "_epoch", "_versions", "_id", "__weakref__")
    __array_priority__ = 1000  # make numpy defer to our reflected operators (array + Tensor)

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            data = np.asarray(data, dtype=dtype)
        elif type(data) is np.ndarray and (data.dtype is _F32 or data.dtype is _F64):
            pass  # the common case, kept cheap: an input x(t) is wrapped at every step
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
        self._epoch = 0
        self._versions = None  # [last in-place update], shared by a tensor and its views (made on demand)
        self._id = _next_id()

    # --- plain attributes -------------------------------------------------------------------
    @property
    def grad(self):
        g = self._grad
        if type(g) is OuterSum:  # a gradient kept as factors is formed on first read
            g = self._grad = g.value(self.data.dtype)
        return g

    @grad.setter
    def grad(self, value):
        if value is not None:
            value = np.asarray(value)
            if value.shape != self.data.shape:
                raise ShapeError(f"grad: {label(self)} has shape {self.data.shape}, the gradient {value.shape}")
        self._grad = value

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
        out = Tensor(self.data, name=self.name)
        out._versions = shared_versions(self)  # same memory: an update of one is an update of both
        return out

    def __setstate__(self, state):
        """Unpickling or deep-copying: restore the slots, then number the node anew. Its old number came
        from another process (or an earlier time) and would break creation order; its inputs are restored
        before it, so they are numbered first."""
        for mapping in state if isinstance(state, tuple) else (state,):  # (dict, slots) or a dict
            for name, value in (mapping or {}).items():
                setattr(self, name, value)
        self._id = _next_id()

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

    # --- in-place updates (PyTorch's model: allowed where they cannot corrupt a gradient) --------
    # Each bumps the tensor's version; a backward that needs values saved before the update raises
    # InplaceError instead of returning a wrong gradient. Raw writes to `.data` bypass this tracking,
    # exactly as in PyTorch: use them only for values no recorded graph still needs.
    def __setitem__(self, index, value):
        return self._inplace("setitem", np.ndarray.__setitem__, index, value)

    def __iadd__(self, value):
        return self._inplace("+=", lambda x, v: np.add(x, v, out=x), value)

    def __isub__(self, value):
        return self._inplace("-=", lambda x, v: np.subtract(x, v, out=x), value)

    def __imul__(self, value):
        return self._inplace("*=", lambda x, v: np.multiply(x, v, out=x), value)

    @property
    def _version(self):
        """The in-place counter at this tensor's (or a view's, or its base's) last in-place update; 0 if none."""
        return 0 if self._versions is None else self._versions[0]

    def _inplace(self, op, update, *args):
        global _inplace_epoch
        args = tuple(a.data if isinstance(a, Tensor) else a for a in args)
        if _grad_enabled and (self.requires_grad or any(isinstance(a, Tensor) and a.requires_grad for a in args)):
            raise InplaceError(
                f"{op}: in-place update of {label(self)} {self.shape} while gradients are recorded would cut "
                "the graph; use the out-of-place form (x = x + v), or wrap the update in no_grad() as "
                "optimizers do")
        try:
            update(self.data, *args)
        except ValueError as e:
            raise ShapeError(f"{op}: cannot update {label(self)} of shape {self.shape} in place ({e})") from None
        _inplace_epoch += 1
        shared_versions(self)[0] = _inplace_epoch
        return self


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
    out._epoch = _inplace_epoch
    out._versions = None
    step = _step
    out.step = None if step is None else step.t
    if _anomaly is not None:
        _anomaly.forward(out, op, inputs)
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
        out._id = _next_id()
        return out
    out.requires_grad = True
    out.parents = inputs if step is None else step.substitute(inputs)  # (may make copies: numbered first)
    out.op = op
    out._backward = backward
    out._id = _next_id()
    return out


class StepBatch:
    """The one backward of an op applied at many steps at once (batched.py), or of any op with several
    outputs (ops.split).

    Its members are ordinary nodes, one per step with that step's own inputs (so drawings, step tags and
    copies stay per step), whose values came from one numpy call over all steps. The walk runs
    `backward(gs)` once, when it meets the first member, with every member's gradient (None where none
    arrived) and gets back one tuple of input gradients per member (None for members without one).
    That is safe because members are made together: everything that uses any member is made after all
    of them, so in reverse creation order every member's gradient is complete when the first is met.
    Unless retain_graph, only the members that got a gradient let go of the batch: a later backward from
    another member still works.
    """
    __slots__ = ("members", "backward")

    def __init__(self, backward):
        # weak references: members point to their batch, so strong ones would make a cycle that only the
        # cyclic collector could free (a graph recorded but never differentiated would linger)
        self.members, self.backward = [], backward


def step_results(values, op, inputs, steps, backward):
    """The member nodes of one op applied at many steps at once: member i has value values[i], inputs
    inputs[i] (copies already substituted) and step steps[i]; backward(gs) -> [input grads per member]."""
    batch = StepBatch(backward)
    members = batch.members
    epoch, recording, anomaly = _inplace_epoch, _grad_enabled, _anomaly
    new, keep = Tensor.__new__, members.append
    for value, parents, t in zip(values, inputs, steps):
        out = new(Tensor)
        out.data = value
        out._grad = out.name = out._versions = None
        out.step = t
        out._retains_grad = False
        out._epoch = epoch
        out.op = op
        if anomaly is not None:
            anomaly.forward(out, op, parents)
        needs = False
        if recording:
            for x in parents:
                if x.requires_grad:
                    needs = True
                    break
        if needs:
            out.requires_grad, out.parents, out._backward = True, tuple(parents), batch
        else:
            out.requires_grad, out.parents, out._backward = False, (), None
        out._id = _next_id()
        keep(out)
    batch.members = [weakref.ref(m) for m in members]
    return members


def topological_order(roots, grad_only=True):
    """The nodes reachable from `roots` (a Tensor or a list), each after all of its inputs.

    The order is creation order: a node is always made after its inputs, so sorting the reachable set by
    creation number is topological, needs no recursion however deep the graph, and is the same on every
    run. It also keeps the members of a step batch (made together, see StepBatch) after everything they
    use and before everything that uses them.

    grad_only: follow only inputs that require grad (what backward walks); False: every input, constants
    included (what a drawing shows).
    """
    roots = [roots] if isinstance(roots, Tensor) else list(roots)
    seen, stack = set(roots), list(roots)
    add, push, pop = seen.add, stack.append, stack.pop
    if grad_only:
        while stack:
            for parent in pop().parents:
                if parent.requires_grad and parent not in seen:
                    add(parent)
                    push(parent)
    else:
        while stack:
            for parent in pop().parents:
                if parent not in seen:
                    add(parent)
                    push(parent)
    return sorted(seen, key=_creation)


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
    """Reverse-mode sweep from `root`: fill `.grad` of leaves (and retained nodes, e.g. W(t) copies).

    All-or-nothing: every check runs, and every gradient is computed, before any `.grad` changes.
    """
    if not _grad_enabled:
        raise RuntimeError("backward: called inside no_grad(); nothing there is recorded. Call backward "
                           "outside the no_grad() block")
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad (no input of its graph has "
                           "requires_grad=True, or it was computed under no_grad())")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward: grad can be implicitly created only for scalar outputs; "
                               f"{label(root)} has shape {root.shape}, so pass backward(grad=...) of that shape")
        grad = np.ones_like(root.data)
    else:
        # a copy: the caller may reuse its array, and copies' gradients may keep it as a factor
        grad = np.array(grad.data if isinstance(grad, Tensor) else grad, dtype=root.dtype)
        if grad.shape != root.shape:
            raise ShapeError(f"backward: grad has shape {grad.shape} but {label(root)} has shape {root.shape}")
    global _transposes
    with gc_paused():
        order = topological_order(root)
        _check_saved_values(order)
        _transposes = {}
        try:
            updates = _sweep(order, root, grad, retain_graph)
        finally:
            _transposes = None
        stacks = {}  # stacked factors shared by the leaves' stacked GEMMs (see OuterSum.value)
        for node, g in updates:  # nothing failed: now store the gradients
            if node._grad is None and node.parents:  # a copy's (or retained node's) first gradient
                node._grad = _owned(g, node)  # (factors stay lazy until read; an array gets its own copy)
                continue
            node._grad = _owned(accumulate(node._grad, g), node)
            if not node.parents and type(node._grad) is OuterSum:
                node._grad = node._grad.value(node.data.dtype, stacks)  # a leaf: one dense array (stacked GEMM)


def _check_saved_values(order):
    epoch = _inplace_epoch
    for node in order:
        if not node.parents:
            continue
        if node._backward is None:
            raise GraphFreedError(
                f"backward: trying to backward through the graph a second time ({node.op}{at_step(node)}): "
                "its saved values were freed after the first backward. Pass retain_graph=True to the first "
                "backward, or recompute the forward (in truncated BPTT, detach() the carried state).")
        if node._epoch != epoch:  # an in-place update happened since this node was made
            saves_inputs, saves_output = _ops.SAVES.get(node.op, (True, True))
            inputs = node.parents if saves_inputs else ()
            if node.op in _ops.BIAS_LAST and len(inputs) % 2:
                inputs = inputs[:-1]  # (x₁, w₁, …, bias): the bias's value is never read, only its shape
            for x in inputs + ((node,) if saves_output else ()):
                if x.op == "copy":
                    x = x.parents[0]  # a copy shares its parameter's array: an update of W changes W(t)
                if x._versions is not None and x._versions[0] > node._epoch:
                    raise InplaceError(
                        f"backward: {label(x)} {x.shape} was modified by an in-place operation (version "
                        f"{x._versions[0]}) after {node.op}{at_step(node)} saved it for backward; the gradient "
                        "would be wrong. Update a copy instead (x = x + v), or recompute the forward.")


def shared_versions(x):
    """The version box of x, made on first need; views share their base's box (see ops' view ops)."""
    if x._versions is None:
        x._versions = [0]
    return x._versions


def _sweep(order, root, grad, retain_graph):
    """The reverse sweep: returns (node, gradient) for every node that keeps its .grad.

    Unless retain_graph, each node's closure (its saved values) is dropped as soon as it has run; the
    checks before the sweep make a failure here unlikely (only detect_anomaly raises mid-sweep), and even
    then no .grad has changed yet. This loop runs once per node of graphs with 10⁵ nodes: it is written
    for speed (local names, the gradient sums inline), and copies, a third of an RNN's nodes, take the
    short path: keep ∂L/∂P(t) and pass it on to P unchanged.
    """
    grads = {root: grad}
    pop, get = grads.pop, grads.get
    updates = []
    keep = updates.append
    anomaly = _anomaly
    batches_run = set()  # ids, not the batches: a batch that has run must be free to go (its saved arrays)
    for node in reversed(order):
        g = pop(node, None)
        backward_fn = node._backward
        if backward_fn is _identity:  # a copy P(t): saves nothing, stays usable in its step
            if g is not None:
                if type(g) is OuterSum:
                    g.owned = False  # stored in .grad and passed on: nobody may grow it in place now
                keep((node, g))
                parent = node.parents[0]
                if parent.requires_grad:
                    old = get(parent)
                    grads[parent] = g if old is None else accumulate(old, g)
            continue
        if type(backward_fn) is StepBatch:
            if id(backward_fn) not in batches_run:
                batches_run.add(id(backward_fn))
                _run_batch(backward_fn, node, g, grads, updates, retain_graph)
            elif g is not None:  # cannot happen for batches made by step_results (see StepBatch)
                raise RuntimeError(f"backward: a gradient reached {label(node)} after its step batch had run")
            continue
        if not retain_graph:
            node._backward = None
        if g is None:
            continue
        if node._retains_grad or not node.parents:  # (a leaf may get requires_grad=True after creation)
            if type(g) is OuterSum:
                g.owned = False
            keep((node, g))
            if not node.parents:
                continue
        if type(g) is OuterSum:  # only a copy passes factors through as they are
            g = g.value()
        parent_grads = backward_fn(g)
        if anomaly is not None:
            anomaly.backward(node, parent_grads)
        for parent, pg in zip(node.parents, parent_grads):
            if pg is not None and parent.requires_grad:
                old = get(parent)
                if old is None:
                    grads[parent] = pg
                elif type(old) is _ndarray and type(pg) is _ndarray:
                    grads[parent] = old + pg
                else:
                    grads[parent] = accumulate(old, pg)
    return updates


def _identity(g):
    """A copy's backward: ∂L/∂P(t) passes to P unchanged (the sweep takes this short path inline)."""
    return (g,)


def _send(node, parent_grads, grads, anomaly):
    """Add a node's input gradients to the running sums of its inputs."""
    if anomaly is not None:
        anomaly.backward(node, parent_grads)
    for parent, pg in zip(node.parents, parent_grads):
        if pg is not None and parent.requires_grad:
            old = grads.get(parent)
            grads[parent] = pg if old is None else accumulate(old, pg)


def _run_batch(batch, first, g_first, grads, updates, retain_graph):
    """Run a step batch's backward once for all its members (see StepBatch)."""
    members = [ref() for ref in batch.members]  # (None: a member nobody holds any more, so no gradient)
    gs = [g_first if m is first else None if m is None else grads.pop(m, None) for m in members]
    if not retain_graph:  # members this backward did not reach keep the batch for a later backward
        for m, g in zip(members, gs):
            if g is not None:
                m._backward = None
    gs = [g.value() if type(g) is OuterSum else g for g in gs]
    for m, g in zip(members, gs):
        if g is not None and m._retains_grad:
            updates.append((m, g))
    if all(g is None for g in gs):
        return
    anomaly = _anomaly
    for m, parent_grads in zip(members, batch.backward(gs)):
        if parent_grads is not None:
            _send(m, parent_grads, grads, anomaly)


def _owned(g, node):
    """A first gradient stored in .grad may be a buffer other nodes also hold (add passes its `g` to
    both inputs): copy it, so that in-place updates of one .grad never change another."""
    if type(g) is OuterSum:
        g.owned = False
        return g
    if node._grad is None or g.dtype != node.data.dtype:
        return np.array(g, dtype=node.data.dtype)
    return np.asarray(g)  # (old + g of two 0-d arrays is a numpy scalar: keep .grad an array)


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
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        return wrapped


class gc_paused:
    """Pause Python's cyclic garbage collector while a large graph is built or walked.

    A recorded graph is acyclic (closures capture arrays, never their output tensor), so reference
    counting frees it; the cyclic collector would only re-scan every live node again and again as an
    unrolled graph grows (at T = 5,000 those full scans cost more than the forward itself).
    """
    _depth = 0

    def __enter__(self):
        if gc_paused._depth == 0:
            gc_paused._was_enabled = gc.isenabled()
            gc.disable()
        gc_paused._depth += 1
        return self

    def __exit__(self, *exc):
        gc_paused._depth -= 1
        if gc_paused._depth == 0 and gc_paused._was_enabled:
            gc.enable()
        return False


def label(x):
    """How errors name a tensor: its name (a shared parameter inside step t as its copy, W(t))."""
    if x.name is None:
        return "an unnamed tensor"
    if _step is not None and _step.is_shared(x):
        return f"{x.name}({_step.t})"
    return x.name


def at_step(node):
    return "" if node.step is None else f" at step {node.step}"


def shape_error(op, operands, reason):
    """ShapeError naming the op, the step, and each operand's name and shape."""
    where = op if _step is None else f"{op} at step {_step.t}"
    shapes = " but ".join(f"{label(x)} has shape {x.shape}" for x in operands)
    return ShapeError(f"{where}: {shapes} ({reason})")


def is_grad_enabled():
    return _grad_enabled


def current_step():
    return _step


from . import ops as _ops  # noqa: E402  (ops build on Tensor; Tensor's methods are those ops)

_ops.install_methods(Tensor)
