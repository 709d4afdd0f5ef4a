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

from . import autograd, batched, lazy, ops, recording, unroll
from .lazy import OuterSum
from .ops import unbroadcast

_ndarray = np.ndarray


class Schedule:
    """The compiled backward of one plan (replay._Plan): `run()` is `backward_along(order, root, ones)`."""

    def __init__(self, plan, argument_arrays):
        self.order, self.root = plan.order, plan.root
        self.slot = {node: i for i, node in enumerate(self.order)}
        self.grads = [None] * len(self.order)
        self.arguments = argument_arrays
        self.transposes = {}   # id(w) -> (w, contiguous wᵀ buffer), refreshed at the start of every run
        self.leaf_parts = {}   # slot of a leaf -> its contributions in sweep order (joined in `_leaf`)
        self.copies = []       # (copy node, slot): their gradients are stored as eager stores them
        self.retained = []     # (node, slot): other nodes that keep .grad (retain_grad(), leaves)
        self.steps = []
        backwards = dict(zip(plan.computed, plan.backwards))
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
            else:
                if node._retains_grad:
                    self.retained.append((node, i))
                kernel = _KERNELS.get(id(node.op))
                step = kernel(self, node, i, backward) if kernel is not None else None
                self.steps.append(step or self._generic(node, i, backward))

    # --- where gradients go ---------------------------------------------------------------------------
    def _adder(self, parent):
        """add(g): g into parent's slot as the sweep sums it (None when parent takes no gradient)."""
        j = self.slot.get(parent)
        if j is None or not parent.requires_grad:
            return None
        grads = self.grads
        if not parent.parents:  # a leaf: collected, joined once at the end (see _leaf)
            parts = self.leaf_parts.setdefault(j, [])
            return parts.append
        accumulate = lazy.accumulate

        def add(g):
            old = grads[j]
            if old is None:
                grads[j] = g
            elif type(old) is _ndarray and type(g) is _ndarray:
                grads[j] = old + g
            else:
                grads[j] = accumulate(old, g)
        return add

    def _copy(self, node, i):
        """A copy P(t): keeps ∂L/∂P(t) (stored at the end) and passes it on to P unchanged."""
        self.copies.append((node, i))
        add, grads = self._adder(node.parents[0]), self.grads
        if add is None:
            return
        kept = lazy.kept

        def step():
            g = grads[i]
            if g is not None:
                add(kept(g) if type(g) is OuterSum else g)
        self.steps.append(step)

    def _generic(self, node, i, backward):
        """Any op: its kept closure on the dense gradient, its results summed into the inputs' slots."""
        adders = [self._adder(p) for p in node.parents]
        pairs = [(k, add) for k, add in enumerate(adders) if add is not None]
        grads, dense = self.grads, lazy.dense

        def step():
            g = grads[i]
            if g is None:
                return
            parent_grads = backward(dense(g))
            for k, add in pairs:
                pg = parent_grads[k]
                if pg is not None:
                    add(pg)
        return step

    def _batch(self, first, batch):
        """A step batch: one backward for all members (autograd._run_batch), the linear one as a kernel."""
        members = [ref() for ref in batch.members]
        need_all = all(m is not None and m in self.slot for m in members)
        slots = [self.slot.get(m) for m in members]
        self.retained.extend((m, j) for m, j in zip(members, slots) if j is not None and m._retains_grad)
        adders = [None if m is None else [self._adder(p) for p in m.parents] for m in members]
        if need_all and first.op is batched.LINEAR:
            step = _linear_batch(self, members, slots, adders, batch.backward)
            if step is not None:
                self.steps.append(step)
                return
        grads, dense = self.grads, lazy.dense

        def step():
            gs = [None if j is None else dense(grads[j]) for j in slots]
            if all(g is None for g in gs):
                return
            for parent_grads, parent_adders in zip(batch.backward(gs), adders):
                if parent_grads is None:
                    continue
                for pg, add in zip(parent_grads, parent_adders):
                    if pg is not None and add is not None:
                        add(pg)
        self.steps.append(step)

    def transposed(self, w):
        """A contiguous wᵀ buffer, refilled from w at the start of every run (lazy.transposed's value)."""
        hit = self.transposes.get(id(w))
        if hit is None:
            hit = self.transposes[id(w)] = (w, np.ascontiguousarray(w.T))
        return hit[1]

    def factor_left(self, x, how):
        """The left factor of ∂L/∂w of x @ w as lazy.weight_grad keeps it: a leaf's array is snapshotted
        there; here an argument's view needs none (only the next call refills it), another leaf's is copied
        into a buffer of its own every run."""
        if how != lazy.FACTORS_SNAPSHOT or any(np.shares_memory(x, a) for a in self.arguments):
            return x, None
        snapshot = np.empty_like(x)
        return snapshot, (x, snapshot)

    # --- running ------------------------------------------------------------------------------------
    def run(self):
        grads = self.grads
        for i in range(len(grads)):
            grads[i] = None
        for j in self.leaf_parts:
            self.leaf_parts[j].clear()
        for w, wt in self.transposes.values():
            np.copyto(wt, w.T)
        grads[self.slot[self.root]] = np.ones_like(self.root.data)
        with recording.gc_paused(), lazy.transposes():
            for step in self.steps:
                step()
        self._store()

    def _store(self):
        """backward_along's storing, in its order: copies first (as the sweep met them), then the rest."""
        grads, stored = self.grads, lazy.stored
        for node, i in self.copies:
            g = grads[i]
            if g is None:
                node._grad = None
            elif type(g) is OuterSum:
                g.owned = False
                node._grad = g
            else:
                node._grad = None
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
        """A leaf's gradient, summed from its contributions in sweep order as the sweep sums it: factors
        joined into one OuterSum (what T merges give), arrays added left to right, else one by one."""
        parts = self.leaf_parts.get(j)
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


# --- kernels: (schedule, node, slot, kept closure) -> step, or None for the generic step --------------

def _captured(backward):
    from .refills import captured
    return captured(backward)


def _elementwise(formula):
    """tanh / sigmoid: the eager closure's expression, each operation into a buffer of the node's own."""
    def kernel(schedule, node, i, backward):
        add = schedule._adder(node.parents[0])
        y = node.data
        if add is None or not node.parents[0].data.dtype == y.dtype:
            return None
        grads, out, tmp = schedule.grads, np.empty_like(y), np.empty_like(y)
        eager = schedule._generic(node, i, backward)

        def step():
            g = grads[i]
            if type(g) is not _ndarray or g.dtype != y.dtype or g.shape != y.shape:
                return eager()  # (factors, another dtype: the closure, as the sweep runs it)
            formula(g, y, out, tmp)
            add(out)
        return step
    return kernel


def _tanh_backward(g, y, out, tmp):  # ops.tanh: g * (1 - y * y)
    np.multiply(y, y, out=tmp)
    np.subtract(1, tmp, out=tmp)
    np.multiply(g, tmp, out=out)


def _sigmoid_backward(g, y, out, tmp):  # ops.sigmoid: g * y * (1 - y)
    np.multiply(g, y, out=out)
    np.subtract(1, y, out=tmp)
    np.multiply(out, tmp, out=out)


class _Factor:
    """∂L/∂w of one x @ w as factors, made once and handed out again while g is the same buffer."""
    __slots__ = ("left", "snapshot", "how", "g", "made")

    def __init__(self, left, snapshot, how):
        self.left, self.snapshot, self.how, self.g, self.made = left, snapshot, how, None, None

    def __call__(self, g):
        if self.snapshot is not None:
            np.copyto(self.snapshot[1], self.snapshot[0])
        if g is not self.g:
            left, right = self.left, g
            if left.ndim == 1:
                left, right = left[None, :], g[None, :]
            guards = [self.how] if isinstance(self.how, tuple) else []
            self.made, self.g = OuterSum([left], [right], False, guards), g
        self.made.owned = False
        return self.made


def _affine(schedule, node, i, backward):
    """ops.affine's backward: per term g·wᵀ (into a buffer) and ∂w (factors, or lazy.weight_grad), bias."""
    kept = _captured(backward)
    saved, bias_shape = kept.get("saved"), kept.get("bias_shape")
    if saved is None:
        return None
    y = node.data
    terms = []
    parents = node.parents
    for k, (x, w, need_x, need_w, how) in enumerate(saved):
        add_x = schedule._adder(parents[2 * k]) if need_x else None
        add_w = schedule._adder(parents[2 * k + 1]) if need_w else None
        if x.dtype != y.dtype or w.dtype != y.dtype:
            return None
        wt = schedule.transposed(w) if add_x is not None else None
        gx = np.empty(y.shape[:-1] + (w.shape[0],), y.dtype) if add_x is not None else None
        if add_w is not None and how != lazy.DENSE:
            factor = _Factor(*schedule.factor_left(x, how), how)
        elif add_w is not None:
            factor = lambda g, x=x: lazy.weight_grad(x, g, lazy.DENSE)  # noqa: E731
        else:
            factor = None
        terms.append((add_x, wt, gx, add_w, factor))
    add_b = schedule._adder(parents[-1]) if bias_shape is not None else None
    grads, dot = schedule.grads, np.dot
    eager = schedule._generic(node, i, backward)

    def step():
        g = grads[i]
        if type(g) is not _ndarray or g.dtype != y.dtype or g.shape != y.shape:
            return eager()
        for add_x, wt, gx, add_w, factor in terms:
            if add_x is not None:
                dot(g, wt, out=gx)
                add_x(gx)
            if add_w is not None:
                add_w(factor(g))
        if add_b is not None:
            add_b(unbroadcast(g, bias_shape))
    return step


def _linear_batch(schedule, members, slots, adders, backward):
    """batched.linear_steps' backward: stack the gradients, one GEMM for every ∂x(t), the bias sums, the
    weight's factors per step — into buffers, or None for the generic step."""
    kept = _captured(backward)
    Y, w, rows, hows, bias_shape = (kept.get(k) for k in ("Y", "w", "rows", "hows", "bias_shape"))
    if Y is None or w is None or rows is None or w.dtype != Y.dtype:
        return None
    if bias_shape is not None and bias_shape != Y.shape[-1:]:
        return None
    T = len(members)
    gY, wt = np.empty_like(Y), schedule.transposed(w)
    gX = np.empty(Y.shape[:-1] + (w.shape[0],), Y.dtype)
    g_rows = gY.reshape(T, -1, gY.shape[-1])
    g_row_views = list(g_rows)  # (the same view objects every run: the factors made from them are reused)
    g_bias = np.empty((T, gY.shape[-1]), Y.dtype) if bias_shape is not None else None
    factors = [_Factor(*schedule.factor_left(r, how), how) if how != lazy.DENSE else None
               for r, how in zip(rows, hows)]
    grads, eager_backward = schedule.grads, backward
    dense = lazy.dense

    def eager(gs):  # a member without a gradient, another dtype: the closure, as the sweep runs it
        for parent_grads, parent_adders in zip(eager_backward(gs), adders):
            if parent_grads is not None:
                for pg, add in zip(parent_grads, parent_adders):
                    if pg is not None and add is not None:
                        add(pg)

    def step():
        gs = [dense(grads[j]) for j in slots]
        if any(g is None or g.dtype != Y.dtype for g in gs):
            if not all(g is None for g in gs):
                eager(gs)
            return
        np.stack(gs, out=gY)
        np.matmul(gY, wt, out=gX)                 # as the closure: gY @ transposed(w)
        if g_bias is not None:
            np.sum(g_rows, axis=1, out=g_bias)
        for t, (add_x, add_w, *add_b) in enumerate(adders):
            if add_x is not None:
                add_x(gX[t])
            if add_w is not None:
                factor, g_t = factors[t], g_row_views[t]
                add_w(factor(g_t) if factor is not None else lazy.weight_grad(rows[t], g_t, hows[t]))
            if add_b and add_b[0] is not None:
                add_b[0](g_bias[t])
    return step


_KERNELS = {id(ops.TANH): _elementwise(_tanh_backward), id(ops.SIGMOID): _elementwise(_sigmoid_backward),
            id(ops.AFFINE): _affine}
assert unroll.COPY.is_copy  # (copies are recognised by their identity backward, as the sweep does)
