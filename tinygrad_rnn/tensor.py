"""Tensor: a node of the recorded graph, and how nodes are made.

A Tensor holds its numpy value (`data`), the op that made it (`op`: an Op, i.e. its name plus what the
engine must know about it), its inputs (`parents`, a tuple in argument order so drawings keep their
order) and its backward (`_backward`): a closure `g -> one gradient per input` written right beside the
op's forward in ops.py, a StepBatch shared by several nodes, or autograd.identity for a per-step copy.

Every node is made by `_fill`, the one constructor, and numbered when it is made: inputs always exist
before the node that uses them, so creation order is a topological order (autograd.topological_order).
Ops call `result` (one output) or `step_results` (many outputs sharing one backward), which decide from
this thread's recording state (recording.py) whether to record, and — inside an Unroll step — replace
shared parameters by their per-step copies W(t) through the step's `substitute` hook.

In-place updates (`+=`, `x[i] = v`, ...) bump a version shared by a tensor and its views; backward
refuses to use a saved value that changed since (autograd._check_saved_values).
"""
from __future__ import annotations

import itertools
import weakref

import numpy as np

from . import autograd, lazy, recording
from .autograd import StepBatch, topological_order  # noqa: F401  (re-exported: the graph's order)
from .errors import InplaceError, ShapeError
from .recording import (at_step, current_step, gc_paused, is_grad_enabled, label, no_grad,  # noqa: F401
                        enable_grad, shape_error)

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_current = recording.current
_OuterSum = lazy.OuterSum
# the creation number of the next node (see the module docstring)
_next_id = itertools.count().__next__


class Op(str):
    """An op's name — what `node.op` compares equal to and drawings print — with the facts the rest of the
    engine needs about it, declared beside the op's forward and backward instead of in tables elsewhere.

    saves:   which values its backward reads: "inputs", "output" (backward's in-place check looks at these
             only, as PyTorch does). The default, both, is the safe choice for an op that says nothing.
    pairs:   its inputs are (x₁, w₁, x₂, w₂, …[, bias]): Σ xᵢ wᵢ (+ bias); a bias's value is never read.
    copy:    a per-step copy P(t) of a shared parameter (unroll.py): identity both ways, P's own array.
    view:    its value is a numpy view of its input's array (they share one version counter).
    batched: made for many steps at once with one shared backward (batched.py, ops.split).
    """

    def __new__(cls, name, saves=("inputs", "output"), pairs=False, copy=False, view=False, batched=False):
        op = super().__new__(cls, name)
        op.saves_inputs, op.saves_output = "inputs" in saves, "output" in saves
        op.pairs, op.is_copy, op.is_view, op.is_batched = pairs, copy, view, batched
        return op

    def saved(self, node):
        """The tensors whose values `node`'s backward reads."""
        inputs = node.parents if self.saves_inputs else ()
        if self.pairs and len(inputs) % 2:
            inputs = inputs[:-1]  # (x₁, w₁, …, bias): only the bias's shape is used
        return inputs + (node,) if self.saves_output else inputs

    def terms(self, inputs):
        """For a `pairs` op: ([(x₁, w₁), (x₂, w₂), …], bias or None)."""
        pairs = [(inputs[i], inputs[i + 1]) for i in range(0, len(inputs) - 1, 2)]
        return pairs, (inputs[-1] if len(inputs) % 2 else None)


def _fill(node, data, requires_grad, parents, op, backward, step, retains):
    """The one constructor: every node's slots are set here, and it gets its creation number."""
    node.data = data
    node._grad = None
    node.requires_grad = requires_grad
    node.name = None
    node.step = step
    node.parents = parents
    node.op = op
    node._backward = backward
    node._retains_grad = retains   # leaves that require grad, copies and retain_grad() keep their gradient
    node._epoch = recording.inplace_epoch
    node._versions = None          # [last in-place update], shared by a tensor and its views (made on demand)
    node._id = _next_id()
    return node


def _as_array(data, dtype):
    """A Tensor's array: float32 for Python numbers and float16 & co., as PyTorch."""
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        data = np.asarray(data)
        if data.dtype.kind == "f" and data.dtype not in (np.float32, np.float64):
            data = data.astype(np.float32)  # float16 and friends: compute in float32
        return data
    data = np.asarray(data)  # Python numbers and lists: float32 like PyTorch
    return data.astype(np.float32) if data.dtype == np.float64 else data


class Tensor:
    """A numpy array that records how it was computed, so that backward() can send gradients back.

    Tensor(data, requires_grad=False, dtype=None, name=None). Leaves that require grad (Parameters)
    receive their gradient in `.grad`; `name` labels the node in drawings and error messages; `step` is
    the Unroll step it was made in (None outside any). Operators and methods are the ops of ops.py.

    Comparisons (`== != < <= > >=`) are elementwise, as torch's, also between two tensors: they return a
    boolean tensor that requires no grad. Hashing stays identity, so sets and dicts find a tensor by
    identity, but `t in a_list`, `a_list.index(t)` and `a_list.remove(t)` compare values (ambiguous for
    more than one element, and wrong for equal scalars), as in torch: use a set, a dict or `is`.
    """
    __slots__ = ("data", "_grad", "requires_grad", "name", "step", "parents", "op",
                 "_backward", "_retains_grad", "_epoch", "_versions", "_id", "__weakref__")
    __array_priority__ = 1000  # make numpy defer to our reflected operators (array + Tensor)

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None) -> None:
        source = data if isinstance(data, Tensor) else None
        if source is not None:
            data = source.data
        if dtype is not None or type(data) is not np.ndarray or not (data.dtype is _F32 or data.dtype is _F64):
            data = _as_array(data, dtype)  # (skipped for the common case: an input x(t) wrapped at every step)
        if data.dtype == object:
            raise TypeError("Tensor: data must be numbers or a numeric array, not objects")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got dtype {data.dtype} "
                            "(pass dtype=np.float32 or float data)")
        step = _current.get().step
        _fill(self, data, requires_grad, (), None, None, None if step is None else step.t, requires_grad)
        self.name = name
        if source is not None and data is source.data:
            self._versions = shared_versions(source)  # same memory: an update of one is an update of both

    # --- plain attributes -------------------------------------------------------------------
    @property
    def grad(self) -> np.ndarray | None:
        """∂L/∂self after backward (None before; a copy W(t)'s is ∂L/∂W(t))."""
        g = self._grad
        if type(g) is _OuterSum:  # a gradient kept as factors is formed on first read
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

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (the tensor's own array, not a copy)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def tolist(self):
        """The value as nested Python lists of Python numbers (a 0-d tensor: one number), as torch."""
        return self.data.tolist()

    def __float__(self):
        return float(self._one_element("float"))

    def __int__(self):
        return int(self._one_element("int"))

    def _one_element(self, conversion):
        if self.data.size != 1:
            raise TypeError(f"{conversion}(): only a tensor with one element converts to a Python number, "
                            f"{label(self)} has shape {self.shape}")
        return self.data.item()

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph (truncated BPTT carries states so)."""
        return Tensor(self, name=self.name)

    def __setstate__(self, state):
        """Unpickling or deep-copying: restore the slots, then number the node anew. Its old number came
        from another process (or an earlier time) and would break creation order; its inputs are restored
        before it, so they are numbered first."""
        for mapping in state if isinstance(state, tuple) else (state,):  # (dict, slots) or a dict
            for name, value in (mapping or {}).items():
                setattr(self, name, value)
        self._id = _next_id()

    def retain_grad(self) -> Tensor:
        """Keep this non-leaf tensor's gradient in `.grad` after backward (as PyTorch's retain_grad)."""
        self._retains_grad = True
        return self

    def __repr__(self):
        extras = "".join([f", name={self.name!r}" if self.name else "",
                          f", step={self.step}" if self.step is not None else "",
                          f", op={str(self.op)!r}" if self.op else "",
                          ", requires_grad=True" if self.requires_grad else ""])
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{extras})"

    def __bool__(self):
        """The truth of a one-element tensor (`if loss < 1:`), as torch; more elements are ambiguous."""
        if self.data.size != 1:
            raise TypeError(f"Tensor: the truth value of a tensor with {self.data.size} elements is ambiguous; "
                            "use .any() / .all() on .data, or compare .item()")
        return bool(self.data.item())

    __hash__ = object.__hash__

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Send ∂self back through the recorded graph: sums into `.grad` of every leaf that requires grad
        (and of copies W(t) and retained nodes). grad: ∂L/∂self, required unless self is a scalar.
        retain_graph=True keeps the saved values for another backward (as in PyTorch)."""
        autograd.backward(self, None if grad is None else grad.data if isinstance(grad, Tensor) else grad,
                          retain_graph)

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
        args = tuple(a.data if isinstance(a, Tensor) else a for a in args)
        if _current.get().grad_enabled and (
                self.requires_grad or any(isinstance(a, Tensor) and a.requires_grad for a in args)):
            raise InplaceError(
                f"{op}: in-place update of {label(self)} {self.shape} while gradients are recorded would cut "
                "the graph; use the out-of-place form (x = x + v), or wrap the update in no_grad() as "
                "optimizers do")
        try:
            update(self.data, *args)
        except ValueError as e:
            raise ShapeError(f"{op}: cannot update {label(self)} of shape {self.shape} in place ({e})") from None
        shared_versions(self)[0] = recording.bump_inplace_epoch()
        return self


class Parameter(Tensor):
    """A Tensor that requires grad: a model's weight (a leaf the optimizer updates)."""
    __slots__ = ()

    def __init__(self, data, name: str | None = None, dtype=None) -> None:
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)


def shared_versions(x):
    """The version box of x, made on first need; views share their base's box (see view)."""
    if x._versions is None:
        x._versions = [0]
    return x._versions


def view(out, a):
    """out's array is a numpy view of a's (basic indexing, reshape, transpose): they share one version
    box, so an in-place update through either is seen by backward's saved-value check."""
    base = out.data.base
    if base is not None and (base is a.data or base is a.data.base):
        out._versions = shared_versions(a)
    return out


# --- recording ---------------------------------------------------------------------------------------

_new = object.__new__


def result(data: np.ndarray, op: Op | str, inputs: tuple, backward) -> Tensor:
    """Wrap an op's output; record how to send its gradient back when any input requires grad.

    op: an Op (a plain string is accepted too, with Op's safe defaults). Inside an Unroll step, each shared
    parameter among `inputs` is replaced by its per-step copy W(t), so the graph holds one explicit node per
    use in time while the forward reuses W's array.
    """
    if type(op) is str:
        op = Op(op)
    state = _current.get()
    step = state.step
    t = None if step is None else step.t
    out = None
    if state.grad_enabled:
        for x in inputs:
            if x.requires_grad:
                # (substitute may make copies: they are numbered before this node)
                parents = inputs if step is None else step.substitute(inputs)
                out = _fill(_new(Tensor), data, True, parents, op, backward, t, False)
                break
    if out is None:
        out = _fill(_new(Tensor), data, False, (), None, None, t, False)
    if state.anomaly is not None:
        state.anomaly.forward(out, op, inputs)
    return out


def step_results(values, op, inputs, steps, backward):
    """The member nodes of one op applied at many steps at once (see autograd.StepBatch): member i has value
    values[i], inputs inputs[i] (copies already substituted) and step steps[i]; backward(gs) -> [input
    grads per member]. Every member is recorded (or not) exactly as `result` would record it."""
    batch = StepBatch(backward)
    members = batch.members
    state = _current.get()
    recording_on, anomaly, keep, new = state.grad_enabled, state.anomaly, members.append, _new
    for value, parents, t in zip(values, inputs, steps):
        needs = False
        if recording_on:
            for x in parents:
                if x.requires_grad:
                    needs = True
                    break
        if needs:
            keep(_fill(new(Tensor), value, True, tuple(parents), op, batch, t, False))
        else:
            keep(_fill(new(Tensor), value, False, (), op, None, t, False))
        if anomaly is not None:
            anomaly.forward(members[-1], op, parents)
    batch.members = [weakref.ref(m) for m in members]
    return members


def in_current_step(inputs):
    """inputs as an op recorded now sees them: shared parameters replaced by the active step's copies."""
    step = _current.get().step
    return inputs if step is None else step.substitute(inputs)
