"""Refill rules: how replay (replay.py) recomputes a recorded node's value into its own array.

A rule takes a recorded node (or a step batch's members) and the plan being built, checks from the node and
its backward closure that the closure reads exactly the arrays the rule will refill (else NotReplayable,
with the reason), and returns a zero-argument refill — the numpy call the eager op makes, with out=, so the
value is the eager one bit for bit — or None where the value follows by itself (views, copies). Where a
closure keeps a value that is no node's (cross-entropy's softmax and targets), the rule refreshes that too,
and hands integer arrays it keeps (targets, index arrays) to the plan, which finds the argument they follow.
Rules are looked up by the Op object itself (`id(op)`): ops sharing a name (three cross-entropies, two pows)
stay apart.
"""
from functools import partial

import numpy as np

from . import batched, ops, recording, unroll
from .autograd import StepBatch


class NotReplayable(Exception):
    """Why a recorded graph cannot be replayed (kept in Replay.last_fallback)."""


# --- what an op's closure captured ------------------------------------------------------------------

def captured(fn) -> dict:
    """{free variable name: value} of a closure (an op's backward): the values it will read."""
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or cells is None:
        return {}
    out = {}
    for name, cell in zip(code.co_freevars, cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    return out


def consecutive(arrays):
    """The array that `arrays` (equal shapes and dtypes, C-contiguous) are the consecutive entries of, in
    order — np.stack(arrays) without the copy, as a view of shape (len(arrays), *shape) — else None."""
    first = arrays[0]
    base = first.base
    if base is None or not base.flags.c_contiguous or any(
            a.base is not base or not a.flags.c_contiguous or a.shape != first.shape or a.dtype != first.dtype
            for a in arrays):
        return None
    start, size = first.__array_interface__["data"][0], first.nbytes
    if size == 0 or any(a.__array_interface__["data"][0] != start + k * size for k, a in enumerate(arrays)):
        return None
    offset = (start - base.__array_interface__["data"][0]) // base.itemsize
    return base.reshape(-1)[offset:offset + len(arrays) * first.size].reshape((len(arrays),) + first.shape)


def need(condition, node, what):
    if not condition:
        raise NotReplayable(f"{node.op}{recording.at_step(node)}: {what}")


def _own_array(node):
    """node's value must be an array of its own (refilled in place): not a view, C-contiguous."""
    need(node.data.base is None and node.data.flags.c_contiguous, node, "its value is not an array of its own")
    return node.data


def _same_dtype(node):
    need(all(p.data.dtype == node.data.dtype for p in node.parents), node, "mixed dtypes (a promoted copy)")


# --- refill rules: (node, plan) -> a zero-argument refill, or None when the value follows by itself ------

def _affine(node, plan):
    saved, bias_shape = captured(node._backward).get("saved"), captured(node._backward).get("bias_shape")
    pairs, bias = node.op.terms(node.parents)
    need(saved is not None and len(saved) == len(pairs), node, "its closure is not affine's")
    _same_dtype(node)
    arrays = []
    for (x, w), (xd, wd, _, _, how) in zip(pairs, saved):
        need(xd is x.data and wd is w.data, node, "its closure reads other arrays than its inputs'")
        plan.guard(how)
        arrays.append((xd, wd))
    y = _own_array(node)
    (x0, w0), rest = arrays[0], arrays[1:]
    b = None if bias is None else bias.data
    need((b is None) == (bias_shape is None), node, "its closure is not affine's")
    term = np.empty_like(y)  # xᵢwᵢ, into a buffer of its own instead of a new array every call

    dot, add = np.dot, np.add
    if len(rest) == 1 and b is not None:  # an RNN cell's x U + s W + b: the loop written out
        (x1, w1), = rest

        def refill():
            dot(x0, w0, out=y)
            add(y, dot(x1, w1, out=term), out=y)
            add(y, b, out=y)
        return refill

    def refill():  # as ops.affine: y = x₁w₁; y += xᵢwᵢ; y += bias
        dot(x0, w0, out=y)
        for x, w in rest:
            add(y, dot(x, w, out=term), out=y)
        if b is not None:
            add(y, b, out=y)
    return refill


def _unary(kernel):
    def rule(node, plan):
        x, y = node.parents[0].data, _own_array(node)
        _same_dtype(node)
        kept = captured(node._backward)
        need(all(v is x or v is y for v in kept.values() if isinstance(v, np.ndarray)), node,
              "its closure reads other arrays than its input's and its own")
        return kernel(x, y)
    return rule


def _binary(ufunc):
    def rule(node, plan):
        a, b = (p.data for p in node.parents)
        y = _own_array(node)
        _same_dtype(node)
        kept = captured(node._backward)
        need(all(v is a or v is b for v in kept.values() if isinstance(v, np.ndarray)), node,
              "its closure reads other arrays than its inputs'")
        return partial(ufunc, a, b, out=y)  # (a partial of a ufunc: no Python frame per call)
    return rule


def _matmul(node, plan):
    kept = captured(node._backward)
    a, b = (p.data for p in node.parents)
    need(kept.get("x") is a and kept.get("w") is b, node, "its closure reads other arrays than its inputs'")
    plan.guard(kept.get("how"))
    y = _own_array(node)
    if a.ndim == 2 and b.ndim == 2:
        return lambda: np.dot(a, b, out=y)  # as ops.matmul: x.dot(w) for matrices
    return lambda: np.matmul(a, b, out=y)


def _sum(node, plan):
    kept = captured(node._backward)
    need("axis" in kept and "keepdims" in kept, node, "its closure is not sum's")
    x, y, axis, keepdims = node.parents[0].data, node.data, kept["axis"], kept["keepdims"]
    need(y.base is None, node, "its value is not an array of its own")
    return lambda: np.sum(x, axis=axis, keepdims=keepdims, out=y)


def _stack(node, plan):
    axis = captured(node._backward).get("axis")
    need(axis is not None, node, "its closure is not stack's")
    _same_dtype(node)
    arrays, y = [p.data for p in node.parents], _own_array(node)
    rows = consecutive(arrays) if axis == 0 else None
    if rows is not None:  # (the L(t) of the all-steps loss are one array's entries: its copy is their stack)
        return partial(np.copyto, y, rows)
    return lambda: np.stack(arrays, axis=axis, out=y)


def _view(node, plan):
    """A view (reshape, transpose, basic indexing, split's pieces) follows its input's array by itself."""
    need(node.data.base is not None and np.shares_memory(node.data, node.parents[0].data), node,
          "its value is a copy, not a view of its input")
    return None


def _getitem(node, plan):
    """Basic indexing is a view; advanced indexing (an index array) is refilled with the same index — an
    index array is kept by the graph, so it is refreshed from the argument it follows (see Replay)."""
    kept = captured(node._backward)
    if not kept.get("advanced"):
        return _view(node, plan)
    index, x, y = kept.get("index"), node.parents[0].data, _own_array(node)
    arrays = [i for i in (index if isinstance(index, tuple) else (index,)) if isinstance(i, np.ndarray)]
    need(arrays and all(i.dtype.kind in "iub" for i in arrays), node, "an index that is not integer arrays")
    plan.integer_arrays.extend(arrays)
    return lambda: np.copyto(y, x[index])


def _copy(node, plan):
    need(node.data is node.parents[0].data, node, "a copy that does not share its parameter's array")
    return None


# the unary refills: (x, y) -> a zero-argument refill of y from x (a ufunc's partial has no Python frame)

def _tanh(x, y):
    return partial(np.tanh, x, out=y)


def _sigmoid(x, y):
    return lambda: np.copyto(y, ops.logistic(x))


def _relu(x, y):
    return partial(np.maximum, x, 0, out=y)


def _neg(x, y):
    return partial(np.negative, x, out=y)


# --- step batches (one numpy call for all members) -----------------------------------------------------

def _linear_steps(members, plan):
    first = members[0]
    kept = captured(first._backward.backward)
    Y, w, rows, hows = kept.get("Y"), kept.get("w"), kept.get("rows"), kept.get("hows")
    need(Y is not None and w is not None and rows is not None, first, "its closure is not linear_steps'")
    need(Y.base is None and Y.flags.c_contiguous and all(m.data.base is Y for m in members), first,
          "its members are not views of one output")
    xs = [m.parents[0].data for m in members]
    need(all(m.parents[1].data is w for m in members), first, "its weight is not the closure's")
    need(all(np.shares_memory(r, x) for r, x in zip(rows, xs)), first, "its kept rows are not views of inputs")
    for how in hows:
        plan.guard(how)
    has_bias = len(first.parents) == 3
    bias = first.parents[2].data if has_bias else None

    stacked = np.stack(xs)  # (a buffer for stack(xs), filled by one concatenate: the same values)
    pieces, joined = [x.reshape(-1, x.shape[-1]) for x in xs], stacked.reshape(-1, stacked.shape[-1])
    need(all(np.shares_memory(p, x) for p, x in zip(pieces, xs)), first, "its inputs are not arrays of rows")

    def refill():  # as batched.linear_steps: Y = stack(xs) @ w; Y += bias
        np.concatenate(pieces, out=joined)
        np.matmul(stacked, w, out=Y)
        if bias is not None:
            np.add(Y, bias, out=Y)
    return refill


def _cross_entropy_steps(members, plan):
    first = members[0]
    kept = captured(first._backward.backward)
    probabilities = kept.get("p_minus_onehot")
    inner = captured(probabilities)
    e, total, pick = inner.get("e"), inner.get("total"), inner.get("pick")
    need(e is not None and total is not None and pick is not None and kept.get("T") == len(members), first,
          "its closure is not cross_entropy_steps'")
    losses = first.data.base
    need(losses is not None and all(m.data.base is losses for m in members), first,
          "its members are not views of one array")
    logits = [m.parents[0].data for m in members]
    rows, targets = pick
    plan.integer_arrays.append(targets)
    T = len(members)
    rows_of_logits = consecutive(logits)  # the linear batch's output, when it made them: no stack needed

    def refill():  # as batched.cross_entropy_steps, through the same ops.softmax_cross_entropy
        Z = np.stack(logits) if rows_of_logits is None else rows_of_logits  # (the same values)
        row_losses, fresh = ops.softmax_cross_entropy(Z.reshape(-1, Z.shape[-1]), targets, rows)
        values = captured(fresh)
        np.copyto(e, values["e"])
        np.copyto(total, values["total"])
        np.copyto(losses, row_losses.reshape(T, -1).sum(axis=1))
    return refill


def _cross_entropy(node, plan):
    kept = captured(node._backward)
    z, losses, reduction = kept.get("z"), kept.get("losses"), kept.get("reduction")
    inner = captured(kept.get("p_minus_onehot"))
    e, total, pick = inner.get("e"), inner.get("total"), inner.get("pick")
    need(z is node.parents[0].data and losses is not None and e is not None and pick is not None, node,
          "its closure is not cross_entropy's")
    y = node.data
    need(np.shares_memory(y, losses) if reduction == "none" else y.base is None, node,
          "its value is not an array of its own")
    rows, targets = pick
    plan.integer_arrays.append(targets)
    n = z.shape[0] if z.ndim == 2 else 1

    def refill():  # as ops.cross_entropy, through the same ops.softmax_cross_entropy
        row_losses, fresh = ops.softmax_cross_entropy(z.reshape(n, z.shape[-1]), targets, rows)
        values = captured(fresh)
        np.copyto(e, values["e"])
        np.copyto(total, values["total"])
        np.copyto(losses, row_losses.reshape(losses.shape))
        if reduction != "none":
            np.copyto(y, losses.sum() if reduction == "sum" else losses.mean())
    return refill


def _pieces(members, plan):
    """split's pieces are views of their input: they follow it by themselves."""
    for m in members:
        _view(m, plan)
    return None


def each_op(nodes):
    """(node, None) for each computed node of `nodes`, in their order, and (its first member met, batch)
    once for each step batch: how the forward (the refills) and the backward (replay_backward.Schedule)
    walk a recorded graph."""
    batches = set()
    for node in nodes:
        backward = node._backward
        if type(backward) is StepBatch:
            if id(backward) not in batches:
                batches.add(id(backward))
                yield node, backward
        elif node.parents:
            yield node, None


# the rule of each op, by the Op object itself; a step batch's rule takes its members
RULES = {id(ops.AFFINE): _affine, id(ops.TANH): _unary(_tanh), id(ops.SIGMOID): _unary(_sigmoid),
         id(ops.RELU): _unary(_relu), id(ops.NEG): _unary(_neg), id(ops.ADD): _binary(np.add),
         id(ops.SUB): _binary(np.subtract), id(ops.MUL): _binary(np.multiply), id(ops.MATMUL): _matmul,
         id(ops.SUM): _sum, id(ops.STACK): _stack, id(ops.RESHAPE): _view, id(ops.TRANSPOSE): _view,
         id(ops.GETITEM): _getitem, id(unroll.COPY): _copy, id(ops.CROSS_ENTROPY): _cross_entropy}
BATCH_RULES = {id(batched.LINEAR): _linear_steps, id(batched.CROSS_ENTROPY): _cross_entropy_steps,
               id(ops.SPLIT): _pieces}
