"""Kernels of the replayed backward (replay_backward.Schedule): the hot ops' backwards into buffers made once.

A kernel takes (schedule, node, slot, kept closure) and returns the node's step, or None (the schedule then
runs the closure); a step batch's kernel takes its members (BATCH_KERNELS). Each is its op's backward written
again with out= — the same numpy operations on the same operands in the same order, so the gradients are the
eager ones bit for bit — and falls back to the closure whenever a gradient is not what it was made for
(factors, another dtype or shape):
    tanh, sigmoid   g·(1 − y·y), g·y·(1 − y) (ops.tanh, ops.sigmoid), the factors of y made for all steps
                    at once; with the affine node made just before them (a(t) → s(t)) as one step
    affine          per term g·wᵀ, the weight's factors (lazy.weight_grad), the bias (ops.unbroadcast)
    linear batch    batched.linear_steps: stack, one GEMM for every ∂x(t), bias sums, factors per step
    cross-entropy   batched.cross_entropy_steps: p − onehot scaled by each step's gradient, into one array
    batch           (the linear batch that made the logits takes it as its stacked gradient)
One caveat is kept explicit: a kernel hands a gradient buffer of its own to at most one slot, so a
buffer never ends up as two nodes' .grad (what lazy.stored's copies guard against in the eager sweep).
"""
from __future__ import annotations

import numpy as np

from . import batched, lazy, ops
from .lazy import OuterSum
from .ops import unbroadcast
from .refills import captured, consecutive

_ndarray = np.ndarray


def _put(grads, to, g):
    j, add = to
    if add is None:
        grads[j] = g
    else:
        add(g)


def run_batch(grads, slots, targets, backward, dense=lazy.dense):
    """A step batch's kept closure on its members' gradients, as autograd._run_batch runs it."""
    gs = [None if j is None else dense(grads[j]) for j in slots]
    if all(g is None for g in gs):
        return
    for parent_grads, member_targets in zip(backward(gs), targets):
        if parent_grads is None:
            continue
        for pg, to in zip(parent_grads, member_targets):
            if pg is not None and to is not None:
                _put(grads, to, pg)


def _checked(schedule, node, i, eager, apply, kind):
    """The step of a kernel: apply(g) when g is an array of the node's shape and dtype (what the kernels
    are made for), else eager() (the closure). `kind` names it (Schedule.kinds)."""
    grads, shape, dtype = schedule.grads, node.data.shape, node.data.dtype

    def step():
        g = grads[i]
        if type(g) is _ndarray and g.shape == shape and g.dtype == dtype:
            apply(g)
        else:
            schedule.dirty = True
            eager()
    step.kind = kind
    return step


# --- tanh, sigmoid ------------------------------------------------------------------------------------

# ops.tanh's backward g * (1 - y * y) and ops.sigmoid's g * y * (1 - y): the factors of y alone for every
# step at once (Schedule.derivative_for), then at each step what multiplies by g

def _tanh_derivatives(ys):
    np.multiply(ys, ys, out=ys)
    np.subtract(np.ones((), ys.dtype), ys, out=ys)  # (a 0-d 1 of y's dtype: what numpy makes of the Python 1)


def _tanh_backward(g, y, d, out):
    np.multiply(g, d, out=out)


def _sigmoid_derivatives(ys):
    np.subtract(np.ones((), ys.dtype), ys, out=ys)


def _sigmoid_backward(g, y, d, out):
    np.multiply(g, y, out=out)
    np.multiply(out, d, out=out)


def _elementwise(formula, derivatives):
    """tanh / sigmoid into buffers of the node's own. When its input is an affine node made just before it
    and used by it alone (a(t) → s(t) of an RNN), both run as one step: the affine part then always gets
    this node's buffer, so its factors are made once (at the first run)."""
    def kernel(schedule, node, i, backward):
        parent, y, d = node.parents[0], node.data, schedule.derivative_for(node, derivatives)
        if parent.data.dtype != y.dtype or parent.data.shape != y.shape:
            return None
        targets = schedule.targets(node)
        if targets[0] is None:
            return None
        (j, add), grads, out = targets[0], schedule.grads, schedule.row_for(y)
        eager = schedule.generic(node, i, backward, targets)
        parent_backward = schedule.fusable(node, parent) if add is None and parent.op is ops.AFFINE else None
        then = None if parent_backward is None else _affine_apply(schedule, parent, parent_backward)
        if then is None:
            def apply(g):
                formula(g, y, d, out)
                if add is None:
                    grads[j] = out
                else:
                    add(out)
            return _checked(schedule, node, i, eager, apply, str(node.op))
        schedule.fused.add(parent)
        apply_parent, parent_targets = then
        eager_parent = schedule.generic(parent, j, parent_backward, parent_targets)

        shape, dtype = y.shape, y.dtype

        def step():  # (_checked's step, written out: this is the per-time-step hot path)
            g = grads[i]
            if type(g) is _ndarray and g.shape == shape and g.dtype == dtype:
                formula(g, y, d, out)
                apply_parent(out)  # (the affine's gradient is this buffer: no slot to go through)
            else:
                schedule.dirty = True
                eager()
                eager_parent()
        step.kind = f"affine+{node.op}"
        return step
    return kernel


# --- affine ---------------------------------------------------------------------------------------------

def _factor(left, g, how):
    """∂L/∂w of x @ w with left factor `left` (2-D) and gradient g, as lazy.weight_grad keeps it."""
    return OuterSum([left], [g[None, :] if g.ndim == 1 else g], False, [how] if isinstance(how, tuple) else [])


def _affine(schedule, node, i, backward):
    made = _affine_apply(schedule, node, backward)
    if made is None:
        return None
    apply, targets = made
    return _checked(schedule, node, i, schedule.generic(node, i, backward, targets), apply, "affine")


def _affine_apply(schedule, node, backward):
    """ops.affine's backward as (apply(g), the node's targets): per term g·wᵀ into a buffer, ∂w as factors
    (or lazy.weight_grad), the bias. The factors and the bias view are made again only when g is another
    array than last time (never, when g is a kernel's buffer, as in affine+tanh)."""
    kept = captured(backward)
    saved, bias_shape = kept.get("saved"), kept.get("bias_shape")
    y, parents = node.data, node.parents
    if saved is None or any(x.dtype != y.dtype or w.dtype != y.dtype or x.shape != y.shape[:-1] + w.shape[:1]
                            for x, w, *_ in saved):
        return None
    targets = schedule.targets(node)
    inputs, weights, dense_weights = [], [], []
    for k, (x, w, need_x, need_w, how) in enumerate(saved):
        to_x, to_w = (targets[2 * k] if need_x else None), (targets[2 * k + 1] if need_w else None)
        if to_x is not None:  # (g·wᵀ into a buffer of x's shape and dtype)
            inputs.append((schedule.transposed(w), np.empty(x.shape, y.dtype), *to_x))
        if to_w is not None and how != lazy.DENSE:
            weights.append((to_w, schedule.keeper(to_w), schedule.factor_left(x, how), how))
        elif to_w is not None:
            dense_weights.append((x, to_w))
    to_b = targets[-1] if bias_shape is not None else None
    row = None if to_b is None else schedule.gathering(parents[-1], to_b, y.dtype)
    row_keeper = None if row is None else schedule.keeper(to_b)
    made = [None, None, None]  # (g, [(target, keeper, factor)], the bias gradient when a view of g)

    def remake(g):
        schedule.remade += 1  # (new factors: a parameter's joined ones are joined again, see Schedule._leaf)
        gb = None if to_b is None else unbroadcast(g, bias_shape)
        made[:] = (g, [(to, keeper, _factor(left, g, how)) for to, keeper, left, how in weights],
                   gb if gb is not None and np.shares_memory(gb, g) else None)  # (a view stays valid)
    grads, dot, copyto = schedule.grads, np.dot, np.copyto

    def apply(g):
        if g is not made[0]:
            remake(g)
        for wt, gx, j, add in inputs:      # ∂x = g·wᵀ (ops.affine: g.dot(transposed(w)))
            dot(g, wt, out=gx)
            if add is None:
                grads[j] = gx
            else:
                add(gx)
        for (j, add), keeper, factor in made[1]:
            if add is None:
                grads[j] = factor
                if keeper is not None:
                    keeper._grad = factor
            else:
                add(factor)
        if dense_weights:
            for x, to in dense_weights:
                _put(grads, to, lazy.weight_grad(x, g, lazy.DENSE))
        if to_b is not None:
            gb = made[2]
            if gb is None:
                gb = unbroadcast(g, bias_shape)
            if row is None:
                _put(grads, to_b, gb)
            else:  # the copy's own row (Schedule.gathering; unbroadcast gives the bias's shape)
                copyto(row, gb)
                grads[to_b[0]] = row
                if row_keeper is not None:
                    row_keeper._grad = row
    return apply, targets


# --- the all-steps linear (batched.linear_steps) -----------------------------------------------------------

def linear_batch(schedule, members, slots, targets, backward):
    """batched.linear_steps' backward: stack the members' gradients, one GEMM for every ∂x(t), the bias
    sums, the weight's factors per step — into buffers; None for the generic step."""
    kept = captured(backward)
    Y, w, rows, hows, bias_shape = (kept.get(k) for k in ("Y", "w", "rows", "hows", "bias_shape"))
    if Y is None or w is None or rows is None or w.dtype != Y.dtype or hows is None:
        return None
    if any(how == lazy.DENSE for how in hows) or (bias_shape is not None and bias_shape != Y.shape[-1:]):
        return None
    T = len(members)
    gY, wt = np.empty_like(Y), schedule.transposed(w)
    gX = np.empty(Y.shape[:-1] + (w.shape[0],), Y.dtype)
    g_rows = gY.reshape(T, -1, gY.shape[-1])
    g_bias = np.empty((T, gY.shape[-1]), Y.dtype) if bias_shape is not None else None
    # every gradient is a view of these buffers, made now: what goes where is fixed
    # (slot, value, copy to store it as .grad or None); (add, value); (bias sum, the copy's row to copy it to)
    puts, adds, copied = [], [], []
    for t, (member, member_targets) in enumerate(zip(members, targets)):
        outputs = [gX[t], _factor(schedule.factor_left(rows[t], hows[t]), g_rows[t], hows[t])]
        if g_bias is not None:
            row = schedule.gathering(member.parents[2], member_targets[2], Y.dtype)
            outputs.append(g_bias[t] if row is None else row)
            if row is not None:
                copied.append((g_bias[t], row))
        for to, value in zip(member_targets, outputs):
            if to is not None and to[1] is None:
                puts.append((to[0], value, schedule.keeper(to)))
            elif to is not None:
                adds.append((to[1], value))
    whole = consecutive([row for _, row in reversed(copied)]) if len(copied) == T > 1 else None
    if whole is not None:  # the bias copies' rows are one array's, in sweep order (last step first)
        copied = [(g_bias[::-1], whole)]  # then one copy for all
    grads, dense = schedule.grads, lazy.dense
    # when the loss kernel put its rows in these slots (its first row is in the first slot), they are
    # np.stack(gs) already (the same values)
    stacked, first_row = schedule.stacked.get(tuple(slots), (None, None))
    if stacked is None or stacked.shape != gY.shape or stacked.dtype != gY.dtype:
        first_row = object()  # (never a slot's gradient)
    first_slot = slots[0]

    def step():
        if grads[first_slot] is first_row:
            np.matmul(stacked, wt, out=gX)
            if g_bias is not None:
                np.sum(stacked.reshape(g_rows.shape), axis=1, out=g_bias)
            np.copyto(gY, stacked)  # (the right factors of ∂L/∂V(t) are gY's rows)
        else:
            gs = [dense(grads[j]) for j in slots]
            if any(type(g) is not _ndarray or g.dtype != Y.dtype for g in gs):  # (the closure, as the sweep)
                schedule.dirty = True
                return run_batch(grads, slots, targets, backward, dense)
            np.stack(gs, out=gY)
            np.matmul(gY, wt, out=gX)                 # as the closure: gY @ transposed(w)
            if g_bias is not None:
                np.sum(g_rows, axis=1, out=g_bias)
        for source_rows, row in copied:
            np.copyto(row, source_rows)
        for j, value, keeper in puts:
            grads[j] = value
            if keeper is not None:
                keeper._grad = value
        for add, value in adds:
            add(value)
    step.kind = "linear batch"
    return step


# --- the all-steps cross-entropy (batched.cross_entropy_steps) ------------------------------------------------

def cross_entropy_batch(schedule, members, slots, targets, backward):
    """batched.cross_entropy_steps' backward: p − onehot scaled by each step's gradient, into one array whose
    rows go to the logits' slots (and, stacked already, to the linear batch that made the logits)."""
    kept = captured(backward)
    p_minus_onehot, T, shape = kept.get("p_minus_onehot"), kept.get("T"), kept.get("shape")
    e = captured(p_minus_onehot).get("e") if p_minus_onehot is not None else None
    if e is None or T != len(members) or shape is None or any(
            to is None or to[1] is not None for member_targets in targets for to in member_targets):
        return None
    dZ = np.empty(shape, e.dtype)
    dZ3 = dZ.reshape(T, -1, shape[-1])
    puts = [(to[0], dZ[t]) for t, member_targets in enumerate(targets) for to in member_targets]
    grads = schedule.grads

    def step():
        gs = [grads[j] for j in slots]
        if any(g is None or type(g) is OuterSum for g in gs):  # (the closure, as the sweep runs it)
            schedule.dirty = True
            return run_batch(grads, slots, targets, backward)
        scale = np.array(gs, dtype=e.dtype)        # as the closure: np.array([g, ...]), then dZ * scale
        np.multiply(p_minus_onehot().reshape(dZ3.shape), scale[:, None, None], out=dZ3)
        for j, value in puts:
            grads[j] = value
    step.kind = "cross-entropy batch"
    if len(puts) == T and all(schedule.inflow[j] == 1 for j, _ in puts):  # (nothing else adds to them)
        schedule.stacked[tuple(to[0] for to, in targets)] = (dZ, puts[0][1])
    return step


ROW_OPS = {id(ops.TANH), id(ops.SIGMOID)}  # the kernels whose gradient buffers are arena rows (Schedule.row_for)
# (schedule, node, slot, closure) -> step or None
KERNELS = {id(ops.TANH): _elementwise(_tanh_backward, _tanh_derivatives),
           id(ops.SIGMOID): _elementwise(_sigmoid_backward, _sigmoid_derivatives), id(ops.AFFINE): _affine}
BATCH_KERNELS = {id(batched.LINEAR): linear_batch,  # (schedule, members, slots, targets, backward) -> step or None
                 id(batched.CROSS_ENTROPY): cross_entropy_batch}
