"""The backward pass: the order of the graph, the saved-value check, and the reverse sweep.

Nothing here knows any particular op. A node (tensor.Tensor) brings its inputs (`parents`), its op's
declared facts (`op`, a tensor.Op: what its backward reads) and its backward: a closure
`backward(g) -> one gradient per input`, a StepBatch shared with other nodes, or `identity` for a copy.

    topological_order  creation order of the reachable nodes (no recursion, deterministic)
    backward           checks, then the sweep, then — only if all of it succeeded — the .grad updates
    _sweep             one pass over the nodes in reverse order, summing gradients (never assigning:
                       a weight used at T steps receives T contributions)
Gradients that stay factored (lazy.py) pass through untouched, except where an op needs an array.
"""
from __future__ import annotations

import operator

import numpy as np

from . import lazy, recording
from .errors import GraphFreedError, InplaceError, ShapeError
from .recording import at_step, gc_paused, label

_ndarray = np.ndarray
_OuterSum = lazy.OuterSum
_creation = operator.attrgetter("_id")


def identity(g):
    """A copy's backward: ∂L/∂P(t) passes to P unchanged (the sweep takes this short path inline)."""
    return (g,)


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
        # weak references (tensor.step_results): members point to their batch, so strong ones would make a
        # cycle that only the cyclic collector could free (a graph recorded but never differentiated)
        self.members, self.backward = [], backward


def topological_order(roots, grad_only: bool = True) -> list:
    """The nodes reachable from `roots` (a Tensor or a list), each after all of its inputs.

    The order is creation order: a node is always made after its inputs, so sorting the reachable set by
    creation number is topological, needs no recursion however deep the graph, and is the same on every
    run. It also keeps the members of a step batch (made together, see StepBatch) after everything they
    use and before everything that uses them.

    grad_only: follow only inputs that require grad (what backward walks); False: every input, constants
    included (what a drawing shows).
    """
    roots = [roots] if hasattr(roots, "parents") else list(roots)
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


def backward(root, grad=None, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from `root`: fill `.grad` of leaves (and retained nodes, e.g. W(t) copies).

    grad: an array of root's shape (None: ones, for a scalar root). All-or-nothing: every check runs, and
    every gradient is computed, before any `.grad` changes. Unless retain_graph, each node's saved values
    are freed as soon as its backward has run (freed memory is reused at once: ~6 % faster at T = 100);
    under detect_anomaly, whose whole point is to fail mid-sweep, they are freed only after the sweep
    succeeded, so a failed backward leaves the graph as it was and it can be walked again.
    """
    if not recording.current.get().grad_enabled:
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
        grad = np.array(grad, dtype=root.dtype)
        if grad.shape != root.shape:
            raise ShapeError(f"backward: grad has shape {grad.shape} but {label(root)} has shape {root.shape}")
    with gc_paused():
        backward_along(topological_order(root), root, grad, retain_graph)


def backward_along(order, root, grad, retain_graph: bool = False) -> None:
    """The rest of `backward` for root's order (topological_order(root)) and a checked gradient: the
    saved-value check, the sweep, then the .grad updates. replay.py calls it with the order it keeps."""
    with gc_paused():
        _check_saved_values(order)
        deferred = [] if not retain_graph and recording.current.get().anomaly is not None else None
        with lazy.transposes():
            updates = _sweep(order, root, grad, retain_graph or deferred is not None, deferred)
        for node in deferred or ():  # nothing failed: free what this backward used
            node._backward = None
        stacks = {}  # stacked factors shared by the leaves' stacked GEMMs (see lazy.formed)
        stored, formed = lazy.stored, lazy.formed
        for node, g in updates:  # now store the gradients
            if node._grad is None and node.parents:  # a copy's (or retained node's) first gradient
                node._grad = stored(g, node)  # (factors stay lazy until read; an array gets its own copy)
                continue
            node._grad = stored(lazy.accumulate(node._grad, g), node)
            if not node.parents:
                node._grad = formed(node._grad, node.data.dtype, stacks)  # a leaf: one dense array


def _check_saved_values(order):
    epoch = recording.inplace_epoch
    for node in order:
        if not node.parents:
            continue
        if node._backward is None:
            raise GraphFreedError(
                f"backward: trying to backward through the graph a second time ({node.op}{at_step(node)}): "
                "its saved values were freed after the first backward. Pass retain_graph=True to the first "
                "backward, or recompute the forward (in truncated BPTT, detach() the carried state).")
        if node._epoch != epoch:  # an in-place update happened since this node was made
            for x in node.op.saved(node):
                if x.op is not None and x.op.is_copy:
                    x = x.parents[0]  # a copy shares its parameter's array: an update of W changes W(t)
                if x._versions is not None and x._versions[0] > node._epoch:
                    raise InplaceError(
                        f"backward: {label(x)} {x.shape} was modified by an in-place operation (version "
                        f"{x._versions[0]}) after {node.op}{at_step(node)} saved it for backward; the gradient "
                        "would be wrong. Update a copy instead (x = x + v), or recompute the forward.")


def _sweep(order, root, grad, keep_graph, deferred):
    """The reverse sweep: returns (node, gradient) for every node that keeps its .grad (backward() stores
    them). Unless keep_graph, drops each node's backward (its saved values) once it has run; `deferred`
    (a list, or None) collects instead the nodes whose backward must be dropped after a successful sweep.

    This loop runs once per node of graphs with 10⁵ nodes: it is written for speed (local names, the dense
    case of lazy.accumulate inline), and copies, a third of an RNN's nodes, take the short path: keep
    ∂L/∂P(t) and pass it on to P unchanged.
    """
    grads = {root: grad}
    pop, get = grads.pop, grads.get
    updates = []
    keep = updates.append
    accumulate, kept, dense = lazy.accumulate, lazy.kept, lazy.dense
    anomaly = recording.current.get().anomaly
    batches_run = set()  # ids, not the batches: a batch that has run must be free to go (its saved arrays)
    for node in reversed(order):
        g = pop(node, None)
        backward_fn = node._backward
        if backward_fn is identity:  # a copy P(t): saves nothing, stays usable in its step
            if g is not None:
                keep((node, kept(g) if type(g) is _OuterSum else g))
                parent = node.parents[0]
                if parent.requires_grad:
                    old = get(parent)
                    grads[parent] = g if old is None else accumulate(old, g)
            continue
        if type(backward_fn) is StepBatch:
            if id(backward_fn) not in batches_run:
                batches_run.add(id(backward_fn))
                _run_batch(backward_fn, node, g, grads, updates, keep_graph, deferred)
            elif g is not None:  # cannot happen for batches made by step_results (see StepBatch)
                raise RuntimeError(f"backward: a gradient reached {label(node)} after its step batch had run")
            continue
        if not keep_graph:
            node._backward = None
        elif deferred is not None:
            deferred.append(node)
        if g is None:
            continue
        if node._retains_grad or not node.parents:  # (a leaf may get requires_grad=True after creation)
            keep((node, kept(g) if type(g) is _OuterSum else g))
            if not node.parents:
                continue
        if type(g) is _OuterSum:  # only a copy passes factors through as they are
            g = dense(g)
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


def _run_batch(batch, first, g_first, grads, updates, keep_graph, deferred):
    """Run a step batch's backward once for all its members (see StepBatch)."""
    members = [ref() for ref in batch.members]  # (None: a member nobody holds any more, so no gradient)
    gs = [g_first if m is first else None if m is None else grads.pop(m, None) for m in members]
    # only members this backward reached let go of the batch: the others keep it for a later backward
    gs = [lazy.dense(g) if type(g) is _OuterSum else g for g in gs]
    for m, g in zip(members, gs):
        if g is not None:
            if not keep_graph:
                m._backward = None
            elif deferred is not None:
                deferred.append(m)
            if m._retains_grad:
                updates.append((m, g))
    if all(g is None for g in gs):
        return
    anomaly = recording.current.get().anomaly
    accumulate = lazy.accumulate
    for m, parent_grads in zip(members, batch.backward(gs)):
        if parent_grads is None:
            continue
        if anomaly is not None:
            anomaly.backward(m, parent_grads)
        for parent, pg in zip(m.parents, parent_grads):
            if pg is not None and parent.requires_grad:
                old = grads.get(parent)
                grads[parent] = pg if old is None else accumulate(old, pg)
