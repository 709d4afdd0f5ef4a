"""The replayed backward: the kept sweep compiled into a flat schedule of steps (replay.py calls it).

At recording, `Schedule(plan)` walks the kept order once, in reverse as autograd._sweep does, and makes one
step per node: a Python closure that reads the node's gradient from a slot of a list (indices fixed now,
no dict), runs the node's backward and puts what it returns into its inputs' slots. Every later call runs
the steps in that order. The arithmetic is the eager one, operation by operation and in the same order, so
the gradients are bit for bit those of L.backward(); what goes away is the sweep's bookkeeping:
- where each gradient goes is decided now (`targets`): the first gradient to reach a slot is put there,
  later ones are summed in as the sweep sums them (`old + g`, into a buffer of the slot's own);
- the hot ops have kernels (replay_kernels.py) that write into buffers made once; the weight-gradient
  factors they hand out (lazy.OuterSum) are made once too, and store a copy's gradient as they make it;
- a parameter's gradient is joined from its T copies' at the end in one pass: factors into one OuterSum
  (what T merges give), bias rows gathered in one array and summed by one np.add.accumulate (the same
  additions in the same order as the sweep's);
- any other op (cross-entropy, stack, sum, mul, a cell's gates, ...) runs its kept closure, as the sweep
  would (`generic`), inside lazy.transposes() so that its g·Wᵀ is the eager one too.
Like the values, the per-copy gradients of one call (W(t).grad's factors, b(t).grad) live in buffers the
next call overwrites (CUDA graphs' static outputs); the parameters' .grad are new arrays each call.
"""
from __future__ import annotations

import numpy as np

from . import autograd, lazy
from .lazy import OuterSum
from .refills import consecutive, each_op
from .replay_kernels import BATCH_KERNELS, KERNELS, ROW_OPS, run_batch

_ndarray = np.ndarray


class Schedule:
    """The compiled backward of one plan (replay._Plan), made before the first backward frees the nodes'
    closures: `run()` is `backward_along(order, root, ones)`."""

    def __init__(self, plan, argument_arrays):
        self.order, self.root = plan.order, plan.root
        self.slot = {node: i for i, node in enumerate(self.order)}
        self.grads, self._nones = [None] * len(self.order), [None] * len(self.order)
        self.arguments = argument_arrays
        self.transposes = {}   # id(w) -> (w, contiguous wᵀ buffer), refreshed at the start of every run
        self.snapshots = []    # (leaf array, its snapshot buffer): copied at the start of every run
        self._count_edges()
        self.arrived = [0] * len(self.order)  # edges given a target so far (in the order the steps run)
        self._targets = {}     # node -> its inputs' targets (see targets)
        self.stacked = {}      # tuple of slots -> (an array whose rows a kernel puts there, in order; its row 0)
        self.leaf_parts = {}   # slot of a leaf -> its direct contributions in sweep order (see _leaf)
        self.gathered = {}     # slot of a leaf fed by copies -> (rows, their running sums), see gathering
        self.rows = {}         # slot of a copy -> its row of its leaf's gathered rows
        self.copies = []       # (copy node, slot), in sweep order
        self.kept_by_kernels = set()  # slots of copies whose .grad a kernel stores as it makes it
        self.retained = []     # (node, slot): the other nodes that keep .grad (retain_grad(), leaves)
        self.fused = set()     # affine nodes whose backward runs inside their tanh/sigmoid's step
        self.dirty = False     # a kernel fell back to its closure this run: store every copy at the end
        self.remade = 0        # factors made again by kernels (then a parameter's are joined again)
        self.joined = {}       # slot of a leaf -> (remade, its copies' factors joined: _Joined)
        self.derivatives = {}  # id(rows) -> (prepare, rows, the values they are made from), see derivative_for
        self._arenas = self._count_arenas()
        self.steps = []
        self.retained.extend((n, self.slot[n]) for n in reversed(self.order) if not n.parents)
        for node, batch in each_op(reversed(self.order)):
            i, backward = self.slot[node], node._backward
            if batch is not None:
                self._batch(node, batch)
            elif backward is autograd.identity:
                self._copy(node, i)
            elif node not in self.fused:
                if node._retains_grad:
                    self.retained.append((node, i))
                kernel = KERNELS.get(id(node.op))
                step = kernel(self, node, i, backward) if kernel is not None else None
                self.steps.append(step or self.generic(node, i, backward))
        self.other_copies = [(n, i) for n, i in self.copies if i not in self.kept_by_kernels]
        kept = self.kept_by_kernels  # leaves whose copies' gradients the kernels keep: rows, or factors
        self.rows_kept = {j for j, c in self.fed_by_copies.items() if all(i in kept and i in self.rows for i in c)}
        self.factors_kept = {j for j, c in self.fed_by_copies.items() if all(i in kept for i in c)} - self.rows_kept
        # what each step is: a kernel's name ("affine+tanh", "linear batch", ...) or "closure", "copy"
        self.kinds = [getattr(step, "kind", "closure") for step in self.steps]

    def _count_arenas(self):
        """{(shape, dtype): [rows, next free]}: one array for the gradient buffers of all tanh / sigmoid nodes
        of a shape, rows handed out in sweep order (row_for) — so the copies' right factors of ∂L/∂W, ∂L/∂U
        (δ_T … δ_1) are already one contiguous array where the parameter's gradient is formed; and one
        per (op, shape, dtype) for their derivative factors (derivative_for)."""
        count = {}
        for node in self.order:
            if node.parents and id(node.op) in ROW_OPS:
                shape, dtype = node.data.shape, node.data.dtype.str
                for key in ((shape, dtype), (id(node.op), shape, dtype)):
                    count[key] = count.get(key, 0) + 1
        return {key: [np.empty((n,) + key[-2], key[-1]), 0] for key, n in count.items()}

    def row_for(self, y):
        """A buffer like y: the next row of its arena (see _count_arenas), or a new array."""
        arena = self._arenas.get((y.shape, y.dtype.str))
        if arena is None or arena[1] == len(arena[0]):
            return np.empty_like(y)
        arena[1] += 1
        return arena[0][arena[1] - 1, ...]  # (with ..., a 0-d row is an array too, not a numpy scalar)

    def derivative_for(self, node, prepare):
        """The buffer of node's derivative factor (1 − y·y for tanh): a row of one array that
        `prepare(rows)` fills for all nodes of node's op and shape at once, from their values, at the start of
        every run — elementwise arithmetic, so the same bits as at each step, in 2–3 numpy calls instead of 1–2
        per step. Every such node asks for one (its kernel does first), so the rows are all in use."""
        y, shape = node.data, (-1,) + node.data.shape[1:]  # (concatenated, y's fill rows of one array)
        rows = self._arenas[(id(node.op), y.shape, y.dtype.str)][0]  # (one per such node: counted)
        ys = self.derivatives.setdefault(id(rows), (prepare, rows.reshape(shape), []))[2]
        ys.append(y.reshape(shape))  # (a view: y is refilled in place)
        return rows[len(ys) - 1, ...]

    def _count_edges(self):
        """How many edges may bring each slot a gradient; the leaves that only copies feed (fed_by_copies:
        leaf slot -> its copies' slots, sweep order)."""
        self.inflow = [0] * len(self.order)
        self.fed_by_copies, direct = {}, set()
        for node in self.order:
            for parent in node.parents:
                j = self.slot.get(parent)
                if j is None or not parent.requires_grad:
                    continue
                self.inflow[j] += 1
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
            copies.reverse()
            self.position.update((i, k) for k, i in enumerate(copies))

    # --- where gradients go ---------------------------------------------------------------------------
    def targets(self, node):
        """For each of node's inputs, where its gradient goes: None (it takes none), or (slot, add) with add
        None when this is the first gradient to reach the slot (it is simply put there), else add(g),
        which sums it in as the sweep does. Decided at the first call for a node, as its step will run
        (arrival order); later calls for it (a kernel's closure fallback) get the same."""
        made = self._targets.get(node)
        if made is None:
            made = self._targets[node] = [self._target(p) for p in node.parents]
        return made

    def _target(self, parent):
        j = self.slot.get(parent)
        if j is None or not parent.requires_grad:
            return None
        self.arrived[j] += 1
        if not parent.parents:  # a leaf: collected, joined once at the end (see _leaf)
            return j, self.leaf_parts.setdefault(j, []).append
        if self.arrived[j] == 1:  # (also when one node brings it twice, as s + s: put, then add)
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

    def keeper(self, to):
        """The copy node whose .grad a kernel may store as it puts a gradient at target `to` (its only
        gradient, put there), or None."""
        if to is None or to[1] is not None or self.inflow[to[0]] != 1:
            return None
        node = self.order[to[0]]
        if node.op is None or not node.op.is_copy:
            return None
        self.kept_by_kernels.add(to[0])
        return node

    def gathering(self, parent, to, dtype):
        """For a kernel that puts an array of parent's shape (a bias gradient) at target `to`: when parent
        is a copy of a leaf that only copies feed, its row of one array (the leaf's copies' gradients in
        sweep order) to copy it into, so that the copy keeps its row as .grad and the leaf's sum is one
        np.add.accumulate over the rows. None otherwise."""
        if to is None or to[1] is not None or not parent.parents:
            return None
        leaf = parent.parents[0]
        j = self.slot.get(leaf)
        if j not in self.fed_by_copies or leaf.data.dtype != dtype:
            return None
        if j not in self.gathered:
            rows = np.empty((len(self.fed_by_copies[j]),) + leaf.data.shape, leaf.data.dtype)
            self.gathered[j] = (rows, np.empty_like(rows))
        row = self.rows[to[0]] = self.gathered[j][0][self.position[to[0]], ...]
        return row

    # --- steps ----------------------------------------------------------------------------------------
    def _copy(self, node, i):
        """A copy P(t): keeps ∂L/∂P(t) (stored at the end) and passes it on to P unchanged — at the end
        too when only copies feed P (see _leaf), else now."""
        self.copies.append((node, i))
        j = self.slot.get(node.parents[0])
        if j in self.fed_by_copies:
            return
        to = self._target(node.parents[0])
        if to is None:
            return
        grads, kept, (j, add) = self.grads, lazy.kept, to

        def step():
            g = grads[i]
            if g is not None:
                add(kept(g) if type(g) is OuterSum else g)
        step.kind = "copy"
        self.steps.append(step)

    def generic(self, node, i, backward, targets=None):
        """Any op: its kept closure on the dense gradient, its results put at the inputs' targets."""
        targets = self.targets(node) if targets is None else targets
        pairs = [(k, to) for k, to in enumerate(targets) if to is not None]
        grads, dense = self.grads, lazy.dense

        def step():
            g = grads[i]
            if g is None:
                return
            parent_grads = backward(dense(g))
            for k, (j, add) in pairs:
                pg = parent_grads[k]
                if pg is None:
                    continue
                if add is None:
                    grads[j] = pg
                else:
                    add(pg)
        return step

    def _batch(self, first, batch):
        """A step batch: one backward for all members (autograd._run_batch), as a kernel where there is one."""
        members = [ref() for ref in batch.members]
        slots = [self.slot.get(m) for m in members]
        self.retained.extend((m, j) for m, j in zip(members, slots) if j is not None and m._retains_grad)
        targets = [None if m is None else self.targets(m) for m in members]
        kernel = BATCH_KERNELS.get(id(first.op)) if None not in slots else None
        step = None if kernel is None else kernel(self, members, slots, targets, batch.backward)
        grads, dense = self.grads, lazy.dense
        self.steps.append(step or (lambda: run_batch(grads, slots, targets, batch.backward, dense)))

    def fusable(self, node, parent):
        """parent's kept closure when its backward may run inside node's step: parent is made just before
        node (no step between them in the sweep), its gradient comes from node alone, it keeps no .grad."""
        if (self.slot.get(parent) != self.slot[node] - 1 or self.inflow[self.slot[parent]] != 1
                or parent._retains_grad):
            return None
        return parent._backward

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
        grads[:] = self._nones  # (the same list, emptied in one call: the steps hold it)
        for parts in self.leaf_parts.values():
            parts.clear()
        for w, wt in self.transposes.values():
            np.copyto(wt, w.T)
        for x, snapshot in self.snapshots:
            np.copyto(snapshot, x)
        for prepare, rows, ys in self.derivatives.values():
            np.concatenate(ys, out=rows)
            prepare(rows)
        grads[self.slot[self.root]] = np.ones_like(self.root.data)
        self.dirty = False
        try:
            with lazy.transposes():  # (the caller, replay._Recorded.run, has paused the collector)
                for step in self.steps:
                    step()
        except BaseException:  # all or nothing, as L.backward(): no copy keeps a gradient of this run
            for node, _ in self.copies:
                node._grad = None
            raise
        self._store()

    def _store(self):
        """backward_along's storing: the copies' gradients (as the sweep kept them), then the others'."""
        grads, stored, rows = self.grads, lazy.stored, self.rows
        for node, i in self.copies if self.dirty else self.other_copies:
            g = grads[i]
            if type(g) is OuterSum:
                g.owned = False
                node._grad = g
            elif g is not None and g is rows.get(i):  # its own row already (see gathering)
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
            if node.parents:  # a retained node: this call's gradient, in an array of its own
                node._grad = None
                node._grad = stored(g, node)
            else:  # a leaf: summed onto its .grad and formed, as backward_along stores it
                node._grad = lazy.formed(stored(lazy.accumulate(node._grad, g), node), node.data.dtype, stacks)

    def _leaf(self, j):
        """A leaf's gradient, its contributions summed in sweep order as the sweep sums them (lazy.accumulate),
        the copies' bias rows by one np.add.accumulate, their factors joined once (_Joined)."""
        copies, grads = self.fed_by_copies.get(j), self.grads
        if j in self.gathered:
            rows, sums = self.gathered[j]
            if (not self.dirty and j in self.rows_kept) or all(grads[i] is self.rows.get(i) for i in copies):
                return rows[0] if len(copies) == 1 else np.add.accumulate(rows, axis=0, out=sums)[-1]
        if j in self.factors_kept and not self.dirty:  # (O(1) checks: this is per parameter per call)
            joined = self.joined.get(j)
            if joined is None or joined[0] != self.remade:
                joined = self.joined[j] = (self.remade, _Joined([grads[i] for i in copies]))
            if joined[1].ok:
                return joined[1].outer()
        total = None  # else summed as the sweep sums them
        for g in self.leaf_parts.get(j, ()) if copies is None else (grads[i] for i in copies):
            if g is not None:
                total = lazy.accumulate(total, g)
        return total


class _Joined:
    """A parameter's copies' factors (OuterSum each, in sweep order) joined as the T merges of the sweep
    join them, kept while the kernels hand out the same factors. When the right factors are consecutive rows
    of one array (the arena of Schedule.row_for) and fit lazy's one chunk, the join is one left factor
    (concatenated into a buffer of its own each run) and that array: the one GEMM eager's OuterSum.value
    makes, on the same operands, without stacking the right factors again."""

    def __init__(self, parts):
        self.ok, self.left = all(type(p) is OuterSum for p in parts), None
        if not self.ok:
            return
        self.lefts = [a for p in parts for a in p.lefts]  # (no guards: replay checked them before this run,
        self.rights = [b for p in parts for b in p.rights]  # and the parameter's gradient is formed at once)
        right, first = consecutive(self.rights), self.lefts[0]
        if right is not None and sum(r.nbytes for r in self.rights[:-1]) < lazy.CHUNK_BYTES and all(
                a.dtype == first.dtype and a.shape[1] == first.shape[1] for a in self.lefts):
            self.right = right.reshape(-1, right.shape[-1])
            self.left = np.empty((self.right.shape[0], first.shape[1]), first.dtype)

    def outer(self):
        if self.left is None:
            return OuterSum(self.lefts, self.rights)
        np.concatenate(self.lefts, out=self.left)
        return OuterSum([self.left], [self.right])
