"""Unroll: record a recurrent computation step by step, with explicit per-step copies W(t).

BPTT by temporal copies (the lecture's construction): give each step its own copy W(t) of a
shared weight, backpropagate as in any feed-forward graph, then ∂L/∂W = Σ_t ∂L/∂W(t).

    tape = Unroll(shared=[U, W, b])
    with tape:
        for t, x in enumerate(xs, start=1):
            with tape.step(t):
                s = (x @ U + s @ W + b).tanh()     # plain code: W here is W(t)

Every node made inside `tape.step(t)` carries `.step == t`. A copy is a graph node sharing W's
array, so the forward costs no extra memory; its `.grad` is ∂L/∂W(t) after backward.

Where W becomes W(t): every op records its node through tensor.result, which hands its inputs to the
active step's `substitute` (the recording hook, see recording.py): `_Step.substitute` below swaps each
shared parameter for this step's copy, made on first use by `Unroll._new_copy` -> `copy`. Where Σ_t lands
on W: the backward sweep (autograd._sweep) keeps each copy's gradient in W(t).grad and adds it to W's.
"""
from __future__ import annotations

import numpy as np

from . import autograd, recording
from .tensor import Op, Parameter, _fill, _new, Tensor

COPY = Op("copy", saves=(), copy=True)


def copy(p: Tensor, step: int, parents: tuple | None = None) -> Tensor:
    """The per-step copy P(t) of a shared parameter: identity both ways, the same array as P.

    Its gradient is ∂L/∂P(t); the walk keeps it in `.grad` and passes it on unchanged to P, where
    the copies' gradients sum to ∂L/∂P. It saves nothing, so freeing a graph leaves it usable.
    parents: the tuple (P,), which a tape shares between all copies of P (one object fewer per copy).
    """
    out = _fill(_new(Tensor), p.data, p.requires_grad, parents or (p,), COPY, autograd.identity, step, True)
    out.name = f"{p.name or 'param'}({step})"
    return out


class _Step:
    """One step of a tape: which tape, which t, and this step's copies (one per shared parameter).
    Also the context manager `tape.step(t)` returns: while it is active, it is this thread's
    recording step (recording.py), the hook through which every op recorded in it finds its copies."""
    __slots__ = ("tape", "t", "copies", "shared")

    def __init__(self, tape, t):
        self.tape, self.t, self.copies, self.shared = tape, t, {}, tape._shared_set

    def __enter__(self):
        tape, t = self.tape, self.t
        if tape.steps and t <= tape.steps[-1]:
            raise ValueError(f"Unroll.step({t}): steps are entered once each, in increasing order "
                             f"(the last recorded step was {tape.steps[-1]})")
        state = recording.own()
        if state.step is not None:
            raise ValueError(f"Unroll.step({t}): already inside step {state.step.t}; steps do not nest")
        tape.steps.append(t)
        tape._step_copies[t] = self.copies  # (the dict, not the step: a step refers to its tape)
        state.step = self
        return tape

    def __exit__(self, *exc):
        recording.current.get().step = None
        return False

    def is_shared(self, x):
        return self.tape.is_shared(x)

    def substitute(self, inputs):
        """Inputs with every shared parameter replaced by its copy for this step (hot path: every op,
        so the test of Unroll.is_shared is written out here)."""
        shared, copies = self.shared, self.copies
        out = inputs
        for i, x in enumerate(inputs):
            if (x in shared) if shared is not None else isinstance(x, Parameter) and x.requires_grad:
                if out is inputs:
                    out = list(inputs)
                c = copies.get(x)
                out[i] = c if c is not None else self.tape._new_copy(x, self.t)
        return inputs if out is inputs else tuple(out)


class Unroll:
    """The recorded unrolled graph: steps in order and every shared parameter's per-step copies.

    shared: the parameters to copy per step; None means every Parameter (requiring grad) used inside a step.
    """

    def __init__(self, shared=None) -> None:
        self.shared = None if shared is None else list(shared)
        self._shared_set = None if shared is None else set(self.shared)
        self.steps = []
        self._step_copies = {}  # t -> that step's copies {P: P(t)}, for ops that add to a step afterwards
        self._copies = {}   # parameter -> {t: copy}, in order of first use
        self._parents = {}  # parameter -> (parameter,): the parents tuple all its copies share
        self._active = None

    # --- context managers ---------------------------------------------------------------------
    def __enter__(self):
        self._gc = recording.gc_paused().__enter__()  # see gc_paused: the graph is acyclic
        return self

    def __exit__(self, *exc):
        self._gc.__exit__(*exc)
        return False

    def step(self, t: int) -> _Step:
        """Context manager: ops inside belong to step t and use the copies P(t)."""
        return _Step(self, t)

    def at_steps(self, p: Tensor, steps) -> list:
        """[P as an op inside step t sees it, for t in steps]: its copies P(t) (made where step t had not
        used P yet), or P itself at every step when P is not shared. For ops that compute many steps at
        once after they were recorded (batched.py)."""
        missing = [t for t in steps if t not in self._step_copies]
        if missing:
            raise ValueError(f"Unroll: step {missing[0]!r} was not recorded on this tape (recorded: "
                             f"{self.steps[:5]}{' ...' if len(self.steps) > 5 else ''})")
        if not self.is_shared(p):
            return [p] * len(steps)
        out = []
        for t in steps:
            c = self._step_copies[t].get(p)
            out.append(c if c is not None else self._new_copy(p, t))
        return out

    def is_shared(self, p) -> bool:
        """Whether ops inside a step use p through its copies p(t)."""
        shared = self._shared_set
        return p in shared if shared is not None else isinstance(p, Parameter) and p.requires_grad

    def _new_copy(self, p, t):
        """Make P(t) and record it: in step t's copies and in P's copies by step (all share one (P,))."""
        by_step = self._copies.get(p)
        if by_step is None:
            by_step = self._copies[p] = {}
            self._parents[p] = (p,)
        c = by_step[t] = self._step_copies[t][p] = copy(p, t, self._parents[p])
        return c

    # --- what was recorded ------------------------------------------------------------------------
    @property
    def parameters(self) -> list:
        """The shared parameters that have copies, in order of first use."""
        return list(self._copies)

    def copies(self, p: Tensor) -> list:
        """[P(t1), P(t2), ...]: the copies of P at the steps where P was used, in step order."""
        by_step = self._copies.get(p)
        if by_step is None:
            raise KeyError(f"Unroll.copies: {p.name or 'this tensor'} {tuple(p.shape)} has no copies on this "
                           f"tape (it was not used inside a step, or is not among the shared parameters)")
        return [by_step[t] for t in sorted(by_step)]

    def step_grads(self, p: Tensor) -> np.ndarray:
        """np.ndarray (T, *P.shape): ∂L/∂P(t) for each copy (zeros where no gradient reached it).
        Their sum over axis 0 is P.grad (for a P used only inside steps)."""
        return np.stack([c.grad if c.grad is not None else np.zeros_like(c.data) for c in self.copies(p)])
