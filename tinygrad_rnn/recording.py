"""What is being recorded right now: grad mode, anomaly mode and the active Unroll step, per thread.

Like PyTorch's grad mode, this state belongs to the thread that sets it: a thread evaluating under
no_grad() does not switch recording off in a thread that is training, and two threads may each record
their own unrolled graph at once. `current.get()` is this thread's Recording: a context variable
(contextvars gives every thread its own context, and `ContextVar.get` is the cheapest per-thread lookup
Python has — every op reads it once when it makes a node, tensor.result). A thread starts with a shared
default that is never changed; its first change (`own`) makes it a Recording of its own.

The active step is the ONE hook from the bottom of the engine up to unroll.py. It is any object with
    t                  the step number, stamped on every node made inside the step;
    substitute(inputs) the inputs with each shared parameter replaced by its copy for this step;
    is_shared(x)       whether x is used through such copies (how error messages name it: W(3)).
`Unroll.step(t)` sets it (unroll._Step) and clears it on exit.

Process-wide (not per thread): the in-place counter, because arrays are shared between threads, and
the cyclic garbage collector's pause.
"""
from __future__ import annotations

import contextvars
import functools
import gc
import threading

from .errors import ShapeError


class Recording:
    """A thread's recording state (see the module docstring)."""
    __slots__ = ("grad_enabled", "step", "anomaly", "owner")

    def __init__(self, grad_enabled=True, step=None, anomaly=None, owner=None):
        self.grad_enabled = grad_enabled
        self.step = step        # the active Unroll step, or None outside steps
        self.anomaly = anomaly  # the active detect_anomaly() (anomaly.py), or None
        self.owner = owner      # the thread that may change it (None: the shared default, never changed)


current = contextvars.ContextVar("tinygrad_rnn.recording", default=Recording())


def own() -> Recording:
    """This thread's Recording, to change: on the thread's first change, a copy of what it saw so far
    (the default, or a context it inherited) becomes its own."""
    state = current.get()
    ident = threading.get_ident()
    if state.owner != ident:
        state = Recording(state.grad_enabled, state.step, state.anomaly, ident)
        current.set(state)
    return state

# Counts in-place updates (tensor.Tensor._inplace); a node remembers the count at its creation, so
# backward can tell whether anything it saved may have changed since.
inplace_epoch = 0


def bump_inplace_epoch():
    global inplace_epoch
    inplace_epoch += 1
    return inplace_epoch


def is_grad_enabled() -> bool:
    """Whether ops in this thread record their graph (False inside no_grad())."""
    return current.get().grad_enabled


def current_step():
    """The Unroll step active in this thread (see the module docstring), or None."""
    return current.get().step


class _GradMode:
    """Sets this thread's grad mode inside a `with` block, or around a decorated function."""
    enabled = None

    def __enter__(self):
        self._state = state = own()
        self._previous, state.grad_enabled = state.grad_enabled, self.enabled
        return self

    def __exit__(self, *exc):
        self._state.grad_enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapped


class no_grad(_GradMode):
    """Context manager (and decorator): nothing this thread computes inside is recorded for backward."""
    enabled = False


class enable_grad(_GradMode):
    """Context manager (and decorator): record again inside a no_grad() block (as torch.enable_grad)."""
    enabled = True


class gc_paused:
    """Pause Python's cyclic garbage collector while a large graph is built or walked.

    A recorded graph is acyclic (closures capture arrays, never their output tensor), so reference
    counting frees it; the cyclic collector would only re-scan every live node again and again as an
    unrolled graph grows (at T = 5,000 those full scans cost more than the forward itself).
    The collector is process-wide, so the pauses of all threads are counted together under a lock.
    """
    _depth = 0
    _was_enabled = True
    _lock = threading.Lock()

    def __enter__(self):
        with gc_paused._lock:
            if gc_paused._depth == 0:
                gc_paused._was_enabled = gc.isenabled()
                gc.disable()
            gc_paused._depth += 1
        return self

    def __exit__(self, *exc):
        with gc_paused._lock:
            gc_paused._depth -= 1
            if gc_paused._depth == 0 and gc_paused._was_enabled:
                gc.enable()
        return False


# --- how errors name things -------------------------------------------------------------------------

def label(x) -> str:
    """How errors name a tensor: its name (a shared parameter inside step t as its copy, W(t))."""
    if x.name is None:
        return "an unnamed tensor"
    step = current.get().step
    if step is not None and step.is_shared(x):
        return f"{x.name}({step.t})"
    return x.name


def at_step(node) -> str:
    return "" if node.step is None else f" at step {node.step}"


def shape_error(op: str, operands, reason: str) -> ShapeError:
    """ShapeError naming the op, the step, and each operand's name and shape."""
    step = current.get().step
    where = op if step is None else f"{op} at step {step.t}"
    shapes = " but ".join(f"{label(x)} has shape {x.shape}" for x in operands)
    return ShapeError(f"{where}: {shapes} ({reason})")
