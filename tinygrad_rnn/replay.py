"""Replay: record a training step's graph once, then run it again without building it node by node.

    step = Replay(model.loss)          # opt in: wrap the function that returns the loss (or (loss, ...))
    for xs, targets in batches:
        L, out = step(xs, targets)     # forward AND backward: .grad as after L.backward()
        opt.step(); opt.zero_grad()

This is the CUDA-graph idea in numpy. The first call runs the function eagerly, exactly as without
Replay, and keeps what it recorded: the nodes in creation order and each node's backward closure. Every
later call with the same key *replays* it: the new arguments are copied into the argument buffers the
graph reads (x(t) are views of them), each computed node's value is recomputed **into its own array**
by a refill kernel (the numpy call its eager op makes, with out=, so values are bit for bit the eager
ones), and backward runs the kept backward compiled at recording into a flat schedule
(replay_backward.Schedule: the sweep's order and where each gradient goes fixed, the hot ops' backwards
as kernels into buffers made once, replay_kernels.py; every other op's kept closure as the sweep runs it),
with the same operations in the same order as L.backward(), no topological sort and no node made. The
closures and kernels stay valid because they hold the arrays they read, and those arrays are refilled in
place; where a closure holds a value that is not a node's (cross-entropy's softmax, its targets), the op's
rule here refreshes that too. The same Tensor objects come back, so `tape.copies(W)`, `tape.step_grads(W)`,
`W(t).grad`, the analysis and the drawings read a replayed step exactly as an eager one. Like CUDA
graphs' static outputs, the result of one call — values and the per-copy gradients W(t).grad, b(t).grad —
is overwritten by the next call (the Parameters' .grad are new arrays every call).

How replay knows that replaying is right (else it records again, never a wrong answer; the reason is in
`last_fallback`, None after a replay):
- the key: the function; every argument's kind, shape and dtype (numbers, strings and None by value);
  for a bound method of a Module, the module tree's plain settings (cell type, nonlinearity, ...) and
  every Parameter's shape, dtype and requires_grad; every leaf of the graph's shape, dtype and
  requires_grad; grad mode and anomaly mode (no replay under either off/on).
- at recording, proof runs: the function runs again on perturbed copies of the arguments (random floats,
  then the same negated; integers moved to other valid values, see _perturbed). The graphs must have the
  same nodes (op, shape, dtype, step): a code path that depends on the values shows up here. Every leaf
  whose value differs must be a view of an argument buffer (not e.g. a dtype-converted copy, whose refill
  replay could not see); every integer array an op keeps (targets, index arrays) must equal one argument,
  or one row argument[i], in every run (then replay refreshes it from there), or stay constant (then that
  argument is part of the key by value: when its values change, that key runs eagerly from then on).
- every op in the graph has a refill rule (refills.py) that checked, from the node and its closure, that the
  closure reads exactly the arrays the rule refills; an op without one makes the graph "not replayable".
- the version guards of factored gradients (lazy.plan) still hold: a value changed in place re-records.
What it cannot see (as jax.jit and torch.cuda.graphs): value-dependent Python branches that the proof
run happened not to take, and fresh values a function makes itself on every call (random noise, a
global counter): replay keeps the first call's. A Parameter whose array was replaced (optimizers assign
`p.data = w − lr·g`) has the new values copied into the array the graph holds.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import autograd, recording, unroll
from .nn.module import Module
from .refills import BATCH_RULES, RULES, NotReplayable, each_op, need
from .replay_backward import Schedule
from .tensor import Tensor, topological_order


class Ambiguous(NotReplayable):
    """A kept integer array equals several arguments' rows in every proof run so far."""


EXTRA_RUNS = 4  # proof runs at most added to tell apart integer rows that were alike in every run


# --- the structure a function returned -----------------------------------------------------------------

def _contents(value, depth=3):
    """The Tensors and arrays in a function's result (tuples, lists, dicts, dataclasses), in a fixed order,
    without recursion into modules or tapes."""
    out, stack = [], [(value, depth)]
    while stack:
        item, left = stack.pop()
        if isinstance(item, (Tensor, np.ndarray)):
            out.append(item)
        elif left == 0 or isinstance(item, (Module, unroll.Unroll)):
            continue
        elif isinstance(item, (list, tuple)):
            stack.extend((x, left - 1) for x in reversed(item))
        elif isinstance(item, dict):
            stack.extend((x, left - 1) for x in reversed(list(item.values())))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend((getattr(item, f.name), left - 1) for f in reversed(dataclasses.fields(item)))
    return out


def _loss(result):
    loss = result[0] if isinstance(result, (tuple, list)) and result else result
    if not isinstance(loss, Tensor):
        raise NotReplayable(f"the function returned {type(loss).__name__}, not a loss Tensor (or (loss, ...))")
    return loss


# --- the plan: one recorded graph and how to refill it ---------------------------------------------------

class _Plan:
    """A recorded graph: its nodes (all, and the backward's order), refill kernels, guards and what it read."""

    def __init__(self, result):
        self.result, self.root = result, _loss(result)
        if self.root.data.size != 1 or not self.root.requires_grad:
            raise NotReplayable("the loss is not a scalar that requires grad")
        contents = _contents(result)
        roots = [x for x in contents if isinstance(x, Tensor)]
        self.arrays = [x for x in contents if isinstance(x, np.ndarray)]
        self.nodes = topological_order(roots, grad_only=False)
        self.order = topological_order(self.root)
        self.guards, self.integer_arrays, self.refills = [], [], []
        for node, batch in each_op(self.nodes):
            if batch is not None:
                rule = BATCH_RULES.get(id(node.op))
                members = [ref() for ref in batch.members]
                need(rule is not None and all(m is not None for m in members), node, "no replay rule")
                refill = rule(members, self)
            else:
                rule = RULES.get(id(node.op))
                need(rule is not None and node._backward is not None, node, "no replay rule")
                refill = rule(node, self)
            if refill is not None:
                self.refills.append(refill)
        self.leaves = [n for n in self.nodes if not n.parents]

    def guard(self, how):
        if isinstance(how, tuple):  # lazy.plan's (version box, version) of a value kept as a factor
            self.guards.append(how)

    def signature(self):
        """What must match position by position between the recording and the proof run."""
        return [(str(n.op), n.data.shape, n.data.dtype.str, n.step, n.requires_grad, len(n.parents))
                for n in self.nodes]


def _describe(value):
    """An argument's part of the key, or NotReplayable."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise NotReplayable(f"an argument of dtype {value.dtype}")
        return ("array", value.shape, value.dtype.str)
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("value", type(value).__name__, value)
    raise NotReplayable(f"an argument of type {type(value).__name__} (replay takes arrays, numbers, strings)")


def _settings(fn):
    """For a bound method of a Module: its tree's plain settings and its Parameters' shapes, dtypes and
    requires_grad (what decides the code path besides the arguments)."""
    owner = getattr(fn, "__self__", None)
    if not isinstance(owner, Module):
        return ()
    out = []
    for name, module in owner.named_modules():
        for key, value in vars(module).items():
            if value is None or isinstance(value, (bool, int, float, str)):
                out.append((name, key, value))
            elif isinstance(value, Tensor):
                out.append((name, key, value.data.shape, value.data.dtype.str, value.requires_grad))
    return tuple(out)


def _perturbed(value, rng):
    """A copy of an array argument with other values: random floats; every integer moved to another of the
    values present, or of 0 … the largest when none is negative (random steps, so equal entries mostly part;
    targets stay valid classes); bools flipped."""
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind == "f":
        return rng.standard_normal(value.shape).astype(value.dtype)
    if value.dtype.kind == "b":
        return ~value
    present = np.unique(value)
    if present.size and present[0] >= 0:  # indices and classes: 0 … the largest present are valid too
        present = np.arange(present[-1] + 1, dtype=value.dtype)
    if len(present) < 2:
        return value.copy()
    steps = rng.integers(1, len(present), size=value.shape)
    return present[(np.searchsorted(present, value) + steps) % len(present)].astype(value.dtype)


def _fingerprint(arrays):
    return tuple(np.asarray(a, dtype=np.int64).reshape(-1).tobytes() for a in arrays)


def _integer_sources(runs):
    """[(kept array, argument index j, row i or None)]: for every integer array the graph keeps (targets,
    index arrays) that changed between the runs, the one argument (or row `argument[i]`) it equals in every
    run, from which replay refreshes it; a kept array equal in all runs is a constant. NotReplayable when
    a changing one follows no single argument or row."""
    kept = [p.integer_arrays + [a for a in p.arrays if a.dtype.kind in "iub"] for _, p in runs]
    if len({len(k) for k in kept}) != 1:
        raise NotReplayable("the integer arrays kept differ between runs")
    sources = {}  # fingerprint in every run -> [(j, i)]
    for j, b in enumerate(runs[0][0]):
        if isinstance(b, np.ndarray) and b.dtype.kind in "iub":
            for i in [None] + (list(range(len(b))) if b.ndim and len(b) > 1 else []):
                views = [values[j] if i is None else values[j][i] for values, _ in runs]
                sources.setdefault(_fingerprint(views), []).append((j, i))
    out = []
    for versions in zip(*kept):
        mine, found = versions[0], sources.get(_fingerprint(versions), [])
        if not found and all(np.array_equal(mine, v) for v in versions[1:]):
            continue  # a constant
        if not found:
            raise NotReplayable("an integer array kept by the graph follows no single argument")
        if not mine.flags.writeable:
            raise NotReplayable("an integer array kept by the graph is read-only: replay cannot refresh it")
        if len(found) > 1:
            raise Ambiguous("an integer array kept by the graph follows several arguments' rows alike")
        out.append((mine, *found[0]))
    return out


class _Recorded:
    """What replaying one recorded graph needs, fixed at recording: the key, the argument buffers the graph
    reads, the integer arrays to refresh from them, the integers that are part of the key by value, the
    leaves to watch, and the compiled backward."""

    def __init__(self, key, plan, buffers, refresh, by_value):
        self.key, self.plan = key, plan
        self.arrays = [(k, b) for k, b in enumerate(buffers) if isinstance(b, np.ndarray)]
        arrays = [b for _, b in self.arrays]
        # each kept integer array and the view of the buffer it is refreshed from (reshaped once, here)
        self.refresh = [(array, (buffers[j] if i is None else buffers[j][i]).reshape(array.shape, copy=False))
                        for array, j, i in refresh]
        self.by_value = by_value
        # the leaves that are no argument's view (Parameters, constants): their shape, dtype, requires_grad
        self.leaves = [(n, n.data, n.data.shape, n.data.dtype, n.requires_grad) for n in plan.leaves
                       if not any(np.shares_memory(n.data, b) for b in arrays)]
        self.schedule = Schedule(plan, arrays)  # (before the first backward, which frees the closures)
        self.epoch = None  # recording.inplace_epoch when the guards last held

    def integers_changed(self, values):
        """Whether an integer argument that is part of the key by value has other values now."""
        return any(not np.array_equal(values[k], kept) for k, kept in self.by_value)

    def stale(self):
        """Why the recorded graph cannot be replayed now (a reason), or None."""
        for leaf, _, shape, dtype, needs in self.leaves:
            if leaf.data.shape != shape or leaf.data.dtype != dtype or leaf.requires_grad != needs:
                return f"the leaf {leaf.name or 'unnamed'} changed shape, dtype or requires_grad"
        epoch = recording.inplace_epoch  # (every in-place update counts here: unchanged, no guard can fail)
        if epoch != self.epoch:
            for box, version in self.plan.guards:
                if box[0] != version:
                    return "a value kept as a factor was changed in place"
            self.epoch = epoch
        return None

    def run(self, values):
        """The replay: new arguments into the buffers, every value refilled, the compiled backward."""
        for k, buffer in self.arrays:
            np.copyto(buffer, values[k])
        for array, source in self.refresh:
            np.copyto(array, source)
        for leaf, array, *_ in self.leaves:
            if leaf.data is not array:  # a replaced array (p.data = w − lr·g): the graph reads its own
                np.copyto(array, leaf.data)
        plan = self.plan
        with recording.gc_paused():
            for refill in plan.refills:
                refill()
            self.schedule.run()  # the kept backward, compiled (replay_backward.py)
        return plan.result


class Replay:
    """fn(*args, **kwargs) -> loss or (loss, ...), run forward and backward, replayed when it may be.

    Calling it is `result = fn(...); loss.backward(); return result` — by replay when the key matches a
    recorded graph (see the module docstring), else by recording. `replays` counts replayed calls;
    `last_fallback` is why the last call recorded (None: it replayed)."""

    def __init__(self, fn):
        self.fn = fn
        self.replays = 0
        self.last_fallback = "first call: nothing recorded yet"
        self._recorded = None  # the graph recorded last (_Recorded), None if none or not replayable
        self._failed = (None, None)  # (key, reason) of the last graph found not replayable
        self._seen = None  # the last key recorded

    def __call__(self, *args, **kwargs):
        names = sorted(kwargs)
        values = list(args) + [kwargs[k] for k in names]  # (the positions the buffers keep)
        try:
            key = self._key_of(values, names)
        except NotReplayable as e:
            return self._eager(args, kwargs, str(e))
        recorded = self._recorded
        if recorded is not None and key == recorded.key:
            if recorded.integers_changed(values):  # they will change again: stop proving, run eagerly
                self._recorded = None
                self._failed = (key, "not replayable: an integer argument that replay cannot refresh changed "
                                     "its values")
                return self._eager(args, kwargs, self._failed[1])
            reason = recorded.stale()
            if reason is None:
                self.last_fallback = None
                self.replays += 1
                return recorded.run(values)
        elif key == self._failed[0]:  # recorded before and found not replayable: eager, no second proof
            return self._eager(args, kwargs, self._failed[1])
        else:
            reason = "first call" if self._seen is None else "the key changed (arguments' shapes, dtypes, settings)"
        self._seen = key
        return self._record(key, values, len(args), names, reason)

    def _key_of(self, values, names):
        state = recording.current.get()
        if not state.grad_enabled or state.anomaly is not None:
            raise NotReplayable("grad mode is off" if not state.grad_enabled else "detect_anomaly() is on")
        return tuple(map(_describe, values)), tuple(names), _settings(self.fn)

    def _eager(self, args, kwargs, reason):
        self.last_fallback = reason
        result = self.fn(*args, **kwargs)
        _loss(result).backward()
        return result

    def _record(self, key, values, n_args, names, reason):
        self._recorded = None
        buffers = [np.array(v) if isinstance(v, np.ndarray) else v for v in values]
        call = lambda vs: self.fn(*vs[:n_args], **dict(zip(names, vs[n_args:])))  # noqa: E731
        result = call(buffers)
        loss = _loss(result)
        try:
            plan = _Plan(result)
            recorded = _Recorded(key, plan, buffers, *_prove(plan, call, buffers))
        except NotReplayable as e:
            loss.backward()
            self.last_fallback = f"{reason}; not replayable: {e}"
            self._failed = (key, self.last_fallback)
            return result
        autograd.backward_along(plan.order, loss, np.ones_like(loss.data))
        self._recorded = recorded
        self.last_fallback = reason
        return result


def _prove(plan, call, buffers):
    """The proof runs (module docstring): the same graph on perturbed arguments; returns what replay refreshes
    ([(kept integer array, argument j, row i or None)]) and the integer arguments that are part of the key by
    value ([(j, their values)]), or raises NotReplayable."""
    rng = np.random.default_rng(0)
    first = [_perturbed(b, rng) for b in buffers]
    # floats mirrored (a sign test takes the other branch in one of the runs), integers drawn again
    second = [-v if isinstance(v, np.ndarray) and v.dtype.kind == "f" else _perturbed(b, rng)
              for b, v in zip(buffers, first)]
    runs = [(buffers, plan)] + [(values, _proof_run(plan, call, values)) for values in (first, second)]
    arrays = [b for b in buffers if isinstance(b, np.ndarray)]
    twin = runs[1][1]
    for leaf, twin_leaf in zip(plan.leaves, twin.leaves):
        if not np.array_equal(leaf.data, twin_leaf.data, equal_nan=True) and not any(
                np.shares_memory(leaf.data, b) for b in arrays):
            raise NotReplayable(f"the leaf {leaf.name or 'unnamed'} depends on the arguments but is not "
                                "a view of one (a converted or computed copy)")
    if len(plan.arrays) != len(twin.arrays):
        raise NotReplayable("the function returned other arrays in the proof run")
    graph_arrays = arrays + [n.data for n in plan.nodes]
    for mine, theirs in zip(plan.arrays, twin.arrays):
        if mine.dtype.kind == "f" and not np.array_equal(mine, theirs, equal_nan=True) and not any(
                np.shares_memory(mine, a) for a in graph_arrays):
            raise NotReplayable("an array the function returned depends on the arguments but is neither "
                                "an argument's nor a node's")
    for extra in range(EXTRA_RUNS + 1):
        try:
            refresh = _integer_sources(runs)
            break
        except Ambiguous:  # rows alike in every run so far (few classes): perturb the integers once more
            if extra == EXTRA_RUNS:
                raise
            values = [_perturbed(b, rng) if isinstance(b, np.ndarray) and b.dtype.kind in "iub" else v
                      for b, v in zip(buffers, first)]
            runs.append((values, _proof_run(plan, call, values)))
    refreshed = {j for _, j, _ in refresh}
    by_value = [(j, b.copy()) for j, b in enumerate(buffers)  # the others: part of the key by value
                if isinstance(b, np.ndarray) and b.dtype.kind in "iub" and j not in refreshed]
    return refresh, by_value


def _proof_run(plan, call, values):
    with np.errstate(all="ignore"):
        try:
            twin = _Plan(call(values))
        except NotReplayable:
            raise
        except Exception as e:  # the function refused the perturbed values: no proof
            raise NotReplayable(f"the proof run failed ({type(e).__name__}: {e})") from None
    if plan.signature() != twin.signature():
        raise NotReplayable("the graph's structure depends on the arguments' values")
    return twin
