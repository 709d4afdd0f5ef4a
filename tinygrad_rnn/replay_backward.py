"""The replayed backward: the kept sweep compiled into a flat schedule of steps (replay.py calls it).

At recording, `Schedule(plan)` walks the kept order once, in reverse as autograd._sweep does, and makes one
step per node: a Python closure that reads the node's gradient from a slot of a list (indices fixed now,
no dict), runs the node's backward and adds what it returns into its inputs' slots. Every later call runs
the steps in that order. The arithmetic is the eager one, operation by operation and in the same order, so
the gradients are bit for bit those of L.backward(); what goes away is the sweep's bookkeeping:
- the hot ops get kernels that write into buffers made once (out=): tanh and sigmoid (g·(1 − y²),
  g·y·(1 − y)), affine (g·Wᵀ per term, the weight's factors, the bias), the all-steps linear (batched.py);
- the kernels' weight-gradient factors (lazy.OuterSum) are made once and handed out again while the
  gradient array they hold is the same buffer (they hold the node values and the buffers, refilled in
  place), and at a parameter the T copies' factors are joined in one pass instead of merged one by one;
- any other op (cross-entropy, stack, sum, mul, a cell's gates, ...) runs its kept closure, as the sweep
  would (`_generic`), inside the same context (lazy.transposes) so its g·Wᵀ is the eager one too.
Like the values, the per-copy gradients of one call (W(t).grad's factors, b(t).grad) live in buffers the
next call overwrites; the parameters' .grad are new arrays each call.
"""
from __future__ import annotations

import numpy as np

from . import autograd, batched, lazy, ops, recording
from .lazy import OuterSum
from .ops import unbroadcast
from .refills import captured

_ndarray = np.ndarray


class Schedule:
    """The compiled backward of one plan (replay._Plan): `run()` is `backward_along(order, root, ones)`."""

    def __init__(self, plan, argument_arrays):
        self.order, self.root = plan.order, plan.root
        self.slot = {node: i for i, node in enumerate(self.order)}
        self.grads = [None] * len(self.order)
        self.arguments = argument_arrays
        self.transposes = {}   # id(w) -> (w, contiguous wᵀ buffer), refreshed at the start of every run
        self.snapshots = []    # (leaf array, its snapshot buffer): copied at the start of every run
        self.inflow = self._inflow()
        self.leaf_parts = {}   # slot of a leaf -> its direct contributions in sweep order (see _leaf)
        self.gathered = {}     # slot of a leaf fed by copies -> (rows, their running sums), see dense_target
        self.rows = {}         # slot of a copy -> its row of its leaf's `gathered` rows
        self.copies = []       # (copy node, slot), in sweep order: their gradients are stored at the end
        self.retained = []     # (node, slot): the other nodes that keep .grad (retain_grad(), leaves)
        self.steps = []
        self.fused = set()     # affine nodes whose backward runs inside their tanh/sigmoid's step
        backwards = self.backwards = dict(zip(plan.computed, plan.backwards))
        batches_seen = set()
        for node in reversed(self.order):
            i = self.slot[node]
            if not node.parents:
                self.retained.append((node, i))
                continue
            backward = backwards[node]
            if backward is autograd.identity:
                self._copy(node, i)
            elif type(backward) is autograd.StepBatch:
                if id(backward) not in batches_seen:
                    batches_seen.add(id(backward))
                    self._batch(node, backward)
            elif node not in self.fused:
                if node._retains_grad:
                    self.retained.append((node, i))
                kernel = _KERNELS.get(id(node.op))
                step = kernel(self, node, i, backward) if kernel is not None else None
                self.steps.append(step or self._generic(node, i, backward))

    def _inflow(self):
        """For every slot, how many edges may bring it a gradient; and the leaves that only copies feed."""
        count = [0] * len(self.order)
        self.fed_by_copies = {}  # slot of a leaf -> [slots of its copies], while only copies feed it
        direct = set()
        for node in self.order:
            for parent in node.parents:
                j = self.slot.get(parent)
                if j is None or not parent.requires_grad:
                    continue
                count[j] += 1
                if parent.parents:
                    continue
                if node.op is not None and node.op.is_copy:
                    self.fed_by_copies.setdefault(j, []).append(self.slot[node])
                else:
                    direct.add(j)
        for j in direct:
            self.fed_by_copies.pop(j, None)
        self.position = {}  # slot of a copy -> its place among its leaf's copies, in sweep order
        for copies in self.fed_by_copies.values():
            copies.reverse()  # sweep order
            self.position.update((i, k) for k, i in enumerate(copies))
        return count

    # --- where gradients go ---------------------------------------------------------------------------
    def target(self, parent):
        """Where a gradient for `parent` goes: None (it takes none), or (slot, add) — add None when the
        slot has one incoming edge (the gradient is simply put there), else add(g) sums it in as the
        sweep does, into a buffer of the slot's own when both are arrays of its shape and dtype."""
        j = self.slot.get(parent)
        if j is None or not parent.requires_grad:
            return None
        if not parent.parents:  # a leaf: collected, joined once at the end (see _leaf)
            return j, self.leaf_parts.setdefault(j, []).append
        if self.inflow[j] == 1:
            return j, None
        grads, accumulate = self.grads, lazy.accumulate
        shape, dtype, buffer = parent.data.shape, parent.data.dtype, np.empty_like(parent.data)

        def add(g):
            old = grads[j]
            if old is None:
                grads[j] = g
            elif type(old) is _ndarray and type(g) is _ndarray:
                if old.shape == shape and g.shape == shape and old.dtype == dtype and g.dtype == dtype:
                    grads[j] = np.add(old, g, out=buffer)  # (= old + g; the slot's own buffer)
                else:
                    grads[j] = old + g
            else:
                grads[j] = accumulate(old, g)
        return j, add

    def dense_target(self, parent):
        """target(parent) for a kernel that gives an array of parent's shape (a bias): when parent is a copy
        of a leaf that only copies feed, its gradients are gathered as rows of one array in sweep order, so
        the copy keeps its row (no copy of its own to make at the end) and the leaf's sum is one
        np.add.accumulate over the rows (the same additions in the same order as the sweep's)."""
        to = self.target(parent)
        j = None if to is None or not parent.parents else self.slot.get(parent.parents[0])
        if to is None or to[1] is not None or j not in self.fed_by_copies:
            return to
        i, copies = to[0], self.fed_by_copies[j]
        leaf = parent.parents[0]
        if j not in self.gathered:
            rows = np.empty((len(copies),) + leaf.data.shape, leaf.data.dtype)
            self.gathered[j] = (rows, np.empty_like(rows))
        row = self.rows[i] = self.gathered[j][0][self.position[i]]
        grads, shape, dtype = self.grads, row.shape, row.dtype

        def put(g):
            if type(g) is _ndarray and g.shape == shape and g.dtype == dtype:
                np.copyto(row, g)
                g = row
            grads[i] = g
        return i, put

    def _copy(self, node, i):
        """A copy P(t): keeps ∂L/∂P(t) (stored at the end) and passes it on to P unchanged — at the end
        too when only copies feed P (see _leaf), else now."""
        self.copies.append((node, i))
        to = self.target(node.parents[0])
        if to is None or to[0] in self.fed_by_copies:
            return
        j, add = to
        grads, kept = self.grads, lazy.kept

        def step():
            g = grads[i]
            if g is not None:
                add(kept(g) if type(g) is OuterSum else g)
        self.steps.append(step)

    def _generic(self, node, i, backward):
        """Any op: its kept closure on the dense gradient, its results summed into the inputs' slots."""
        targets = [(k, to) for k, to in enumerate(map(self.target, node.parents)) if to is not None]
        grads, dense = self.grads, lazy.dense

        def step():
            g = grads[i]
            if g is None:
                return
            parent_grads = backward(dense(g))
            for k, (j, add) in targets:
                pg = parent_grads[k]
                if pg is None:
                    continue
                if add is None:
                    grads[j] = pg
                else:
                    add(pg)
        return step

    def _batch(self, first, batch):
        """A step batch: one backward for all members (autograd._run_batch), the linear one as a kernel."""
        members = [ref() for ref in batch.members]
        slots = [self.slot.get(m) for m in members]
        self.retained.extend((m, j) for m, j in zip(members, slots) if j is not None and m._retains_grad)
        linear = first.op is batched.LINEAR  # (its third input is the bias: an array of its shape)
        targets = [None if m is None else [(self.dense_target if linear and k == 2 else self.target)(p)
                                           for k, p in enumerate(m.parents)] for m in members]
        if None not in slots and linear:
            step = _linear_batch(self, slots, targets, batch.backward)
            if step is not None:
                self.steps.append(step)
                return
        grads, dense = self.grads, lazy.dense
        self.steps.append(lambda: _run_batch(grads, slots, targets, batch.backward, dense))

    def fusable(self, node, parent):
        """parent's kept affine closure when its backward may run inside node's step: parent is an affine
        node made just before node (no step between them in the sweep) whose gradient comes from node
        alone and which keeps no .grad; else None."""
        if (parent.op is not ops.AFFINE or self.slot.get(parent) != self.slot[node] - 1
                or self.inflow[self.slot[parent]] != 1 or parent._retains_grad):
            return None
        return self.backwards.get(parent)

    def transposed(self, w):
        """A contiguous wᵀ buffer, refilled from w at the start of every run (lazy.transposed's value)."""
        hit = self.transposes.get(id(w))
        if hit is None:
            hit = self.transposes[id(w)] = (w, np.ascontiguousarray(w.T))
        return hit[1]

    def factor_left(self, x, how):
        """The left factor of ∂L/∂w of x @ w as lazy.weight_grad keeps it (a 2-D array): a leaf's array is
        snapshotted there; here an argument's view needs none (only the next call refills it), another
        leaf's is copied into a buffer of its own at the start of every run."""
        if how == lazy.FACTORS_SNAPSHOT and not any(np.shares_memory(x, a) for a in self.arguments):
            snapshot = np.empty_like(x)
            self.snapshots.append((x, snapshot))
            x = snapshot
        return x[None, :] if x.ndim == 1 else x

    # --- running ------------------------------------------------------------------------------------
    def run(self):
        grads = self.grads
        for i in range(len(grads)):
            grads[i] = None
        for parts in self.leaf_parts.values():
            parts.clear()
        for w, wt in self.transposes.values():
            np.copyto(wt, w.T)
        for x, snapshot in self.snapshots:
            np.copyto(snapshot, x)
        grads[self.slot[self.root]] = np.ones_like(self.root.data)
        with recording.gc_paused(), lazy.transposes():
            for step in self.steps:
                step()
        self._store()

    def _store(self):
        """backward_along's storing: the copies' gradients (as the sweep kept them), then the others'."""
        grads, stored, rows = self.grads, lazy.stored, self.rows
        for node, i in self.copies:
            g = grads[i]
            if type(g) is OuterSum:
                g.owned = False
                node._grad = g
            elif g is not None and g is rows.get(i):  # its own row already (see dense_target)
                node._grad = g
            else:
                node._grad = None
                if g is not None:
                    node._grad = stored(g, node)
        stacks = {}
        for node, i in self.retained:
            g = self._leaf(i) if not node.parents else grads[i]
            if g is None:
                continue
            if node.parents:
                node._grad = None
                node._grad = stored(g, node)
                continue
            node._grad = stored(lazy.accumulate(node._grad, g), node)
            node._grad = lazy.formed(node._grad, node.data.dtype, stacks)

    def _leaf(self, j):
        """A leaf's gradient, its contributions summed in sweep order as the sweep sums them: factors
        joined into one OuterSum (what T merges give), arrays added left to right, else one by one."""
        copies = self.fed_by_copies.get(j)
        grads = self.grads
        if j in self.gathered:
            rows, sums = self.gathered[j]
            if all(grads[i] is self.rows.get(i) for i in copies):
                return rows[0] if len(copies) == 1 else np.add.accumulate(rows, axis=0, out=sums)[-1]
        parts = self.leaf_parts.get(j, []) if copies is None else [grads[i] for i in copies
                                                                     if grads[i] is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        if all(type(p) is OuterSum for p in parts):
            return OuterSum([a for p in parts for a in p.lefts], [b for p in parts for b in p.rights], True,
                            [h for p in parts for h in p.guards])
        if all(type(p) is _ndarray for p in parts):
            total = parts[0] + parts[1]
            for p in parts[2:]:
                np.add(total, p, out=total)
            return total
        total = None
        for p in parts:
            total = lazy.accumulate(total, p)
        return total


def _run_batch(grads, slots, targets, backward, dense):
    """A step batch's kept closure on its members' gradients, as autograd._run_batch runs it."""
    gs = [None if j is None else dense(grads[j]) for j in slots]
    if all(g is None for g in gs):
        return
    for parent_grads, member_targets in zip(backward(gs), targets):
        if parent_grads is None:
            continue
        for pg, to in zip(parent_grads, member_targets):
            if pg is not None and to is not None:
                j, add = to
                if add is None:
                    grads[j] = pg
                else:
                    add(pg)


# --- kernels: (schedule, node, slot, kept closure) -> step, or None for the generic step --------------

def _put(grads, to, g):
    j, add = to
    if add is None:
        grads[j] = g
    else:
        add(g)


def _checked(schedule, node, i, backward, apply):
    """The step of a kernel: apply(g) when g is an array of the node's shape and dtype (what the kernels
    are made for), else the closure, as the sweep runs it (factors, another dtype)."""
    grads, shape, dtype = schedule.grads, node.data.shape, node.data.dtype
    eager = schedule._generic(node, i, backward)

    def step():
        g = grads[i]
        if type(g) is _ndarray and g.shape == shape and g.dtype == dtype:
            apply(g)
        else:
            eager()
    return step


def _elementwise(formula):
    """tanh / sigmoid: the eager closure's expression, each operation into a buffer of the node's own.
    When its input is an affine node made just before it and used by it alone (a(t) → s(t) of an RNN),
    the two run as one step: the affine part gets this buffer, the same array every run."""
    def kernel(schedule, node, i, backward):
        parent, y = node.parents[0], node.data
        to = schedule.target(parent)
        if to is None or parent.data.dtype != y.dtype or parent.data.shape != y.shape:
            return None
        j, add = to
        grads, out, tmp = schedule.grads, np.empty_like(y), np.empty_like(y)
        fused = schedule.fusable(node, parent)
        then = None if fused is None else _affine_apply(schedule, parent, fused, out)
        if then is not None:
            schedule.fused.add(parent)
            eager_parent = schedule._generic(parent, j, fused)
            eager = schedule._generic(node, i, backward)
            shape, dtype = y.shape, y.dtype

            def step():
                g = grads[i]
                if type(g) is _ndarray and g.shape == shape and g.dtype == dtype:
                    formula(g, y, out, tmp)
                    then(out)  # (the affine's gradient is this buffer: no slot to go through)
                else:
                    eager()
                    eager_parent()
            return step

        def apply(g):
            formula(g, y, out, tmp)
            if add is None:
                grads[j] = out
            else:
                add(out)
        return _checked(schedule, node, i, backward, apply)
    return kernel


def _tanh_backward(g, y, out, tmp):  # ops.tanh: g * (1 - y * y)
    np.multiply(y, y, out=tmp)
    np.subtract(1, tmp, out=tmp)
    np.multiply(g, tmp, out=out)


def _sigmoid_backward(g, y, out, tmp):  # ops.sigmoid: g * y * (1 - y)
    np.multiply(g, y, out=out)
    np.subtract(1, y, out=tmp)
    np.multiply(out, tmp, out=out)


def _factor(left, g, how):
    """∂L/∂w of x @ w with left factor `left` (2-D) and gradient g, as lazy.weight_grad keeps it."""
    return OuterSum([left], [g[None, :] if g.ndim == 1 else g], False, [how] if isinstance(how, tuple) else [])


def _affine(schedule, node, i, backward):
    apply = _affine_apply(schedule, node, backward)
    return None if apply is None else _checked(schedule, node, i, backward, apply)


def _affine_apply(schedule, node, backward, g_buffer=None):
    """ops.affine's backward as apply(g): per term g·wᵀ (into a buffer) and ∂w (factors, or
    lazy.weight_grad), and the bias. With g_buffer (g is always that array) the factors and the bias view
    are made once here; else they are made again whenever g is another array than last time."""
    kept = captured(backward)
    saved, bias_shape = kept.get("saved"), kept.get("bias_shape")
    y, parents = node.data, node.parents
    if saved is None or any(x.dtype != y.dtype or w.dtype != y.dtype for x, w, *_ in saved):
        return None
    inputs, weights, lefts, dense_weights = [], [], [], []
    for k, (x, w, need_x, need_w, how) in enumerate(saved):
        to_x = schedule.target(parents[2 * k]) if need_x else None
        to_w = schedule.target(parents[2 * k + 1]) if need_w else None
        if to_x is not None:
            inputs.append((schedule.transposed(w), np.empty(y.shape[:-1] + (w.shape[0],), y.dtype), *to_x))
        if to_w is not None and how != lazy.DENSE:
            weights.append(to_w)
            lefts.append((schedule.factor_left(x, how), how))
        elif to_w is not None:
            dense_weights.append((x, to_w))
    to_b = schedule.dense_target(parents[-1]) if bias_shape is not None else None
    made = [None, None, None]  # (g, its factors, its bias gradient when that is a view of g)

    def remake(g):
        gb = None if to_b is None else unbroadcast(g, bias_shape)
        made[:] = g, [(to, _factor(left, g, how)) for to, (left, how) in zip(weights, lefts)], \
            gb if gb is not None and (gb is g or gb.base is g) else None
    if g_buffer is not None:
        remake(g_buffer)
    grads, dot = schedule.grads, np.dot

    def apply(g):
        if g is not made[0]:
            remake(g)
        for wt, gx, j, add in inputs:      # ∂x = g·wᵀ (ops.affine: g.dot(transposed(w)))
            dot(g, wt, out=gx)
            if add is None:
                grads[j] = gx
            else:
                add(gx)
        for (j, add), factor in made[1]:
            if add is None:
                grads[j] = factor
            else:
                add(factor)
        for x, to in dense_weights:
            _put(grads, to, lazy.weight_grad(x, g, lazy.DENSE))
        if to_b is not None:
            gb = made[2]
            _put(grads, to_b, unbroadcast(g, bias_shape) if gb is None else gb)
    return apply


def _linear_batch(schedule, slots, targets, backward):
    """batched.linear_steps' backward: stack the gradients, one GEMM for every ∂x(t), the bias sums, the
    weight's factors per step — into buffers, or None for the generic step."""
    kept = captured(backward)
    Y, w, rows, hows, bias_shape = (kept.get(k) for k in ("Y", "w", "rows", "hows", "bias_shape"))
    if Y is None or w is None or rows is None or w.dtype != Y.dtype or _any_dense(hows):
        return None
    if bias_shape is not None and bias_shape != Y.shape[-1:]:
        return None
    T = len(slots)
    gY, wt = np.empty_like(Y), schedule.transposed(w)
    gX = np.empty(Y.shape[:-1] + (w.shape[0],), Y.dtype)
    g_rows = gY.reshape(T, -1, gY.shape[-1])
    g_bias = np.empty((T, gY.shape[-1]), Y.dtype) if bias_shape is not None else None
    # every output is a view of these buffers made now, so the factors are made once
    lefts = [schedule.factor_left(r, how) for r, how in zip(rows, hows)]
    factors = [_factor(left, g, how) for left, how, g in zip(lefts, hows, g_rows)]
    outputs = [(gX[t], factors[t], None if g_bias is None else g_bias[t]) for t in range(T)]
    grads, dense = schedule.grads, lazy.dense

    def step():
        gs = [dense(grads[j]) for j in slots]
        if any(g is None or g.dtype != Y.dtype for g in gs):  # (the closure, as the sweep runs it)
            return _run_batch(grads, slots, targets, backward, dense)
        np.stack(gs, out=gY)
        np.matmul(gY, wt, out=gX)                 # as the closure: gY @ transposed(w)
        if g_bias is not None:
            np.sum(g_rows, axis=1, out=g_bias)
        for member_targets, member_outputs in zip(targets, outputs):
            for to, g in zip(member_targets, member_outputs):
                if to is not None:
                    j, add = to
                    if add is None:
                        grads[j] = g
                    else:
                        add(g)
    return step


def _any_dense(hows):
    return hows is None or any(how == lazy.DENSE for how in hows)


_KERNELS = {id(ops.TANH): _elementwise(_tanh_backward), id(ops.SIGMOID): _elementwise(_sigmoid_backward),
            id(ops.AFFINE): _affine}
