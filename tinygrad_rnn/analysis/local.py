"""The local (one-step) derivatives every BPTT formula is built from, for any cell, by the engine.

For step k, with the packed state s (see recording.py) and the cell s_k = f(x_k, s_{k−1}; θ):

- D_k = ∂s_k/∂s_{k−1}, shape (w, w): D_k[p, r] = ∂s_k[p]/∂s_{k−1}[r];
- for a parameter P, its *sites* in the step: every node z = … + u @ P + … (or z = … + P, a bias)
  of the cell's graph. The explicit derivative ∂⁺s_k/∂P is then Σ_sites A ⊗ u with A = ∂s_k/∂z (w, |z|):
  ∂⁺s_k[p]/∂P[q, r] = Σ_sites u_q A[p, r]  (a bias: A[p, r]).

All of them come from ONE forward of the cell over every step at once (the steps' inputs (x_k, s_{k−1})
side by side as a batch of rows (k, b)) and backward passes through that small graph.

- Any cell (exact path): w backward passes; pass p seeds every row with the unit vector e_p, so the
  gradients it leaves are row p of every step's Jacobian. Cost O(T·B·w·(cost of one cell row)).
- The cells of nn/cells.py (unit path): there unit u of the new state reads the old state only through
  h @ W (a matmul site) and through entry u of the state itself, and every other op is elementwise on
  gate blocks of d columns, so ∂s_k[p]/∂z[q] ≠ 0 only for q ≡ p (mod d). One backward per state block
  (h, and c for the LSTM) seeded with ones over the whole block then leaves every ∂s_k[p]/∂z[q] apart, and
  D_k[p, r] = Σ_j ∂s_k[p]/∂z[j·d + p] · W[r, j·d + p] + the direct (diagonal) part. Cost: 1 or 2 backward
  passes over T·B rows, plus T·B·w·d·(gate blocks) multiply-adds to assemble D; the sites' A stay in that
  compressed form (`Site.left` multiplies by A without forming it). tests/test_analysis_speed.py checks
  the two paths agree.

Memory: T·B·w² floats for D (chunks of at most CHUNK_ROWS rows, or of about 2²² floats of D, at a time).
"""
from dataclasses import dataclass

import numpy as np

from ..nn.cells import GRUCell, LSTMCell, RNNCell
from ..tensor import Tensor, topological_order

CHUNK_ROWS = 1 << 14
CHUNK_FLOATS = 1 << 22      # the unit path's rows per chunk: about this many floats of D at a time
UNIT_CELLS = (RNNCell, GRUCell, LSTMCell)  # cells with the unit structure of the module docstring


class Site:
    """Where P enters one step: z = … + u @ P + … (or + P). u[k, b] is the multiplier (None for a bias);
    A[k, b] = ∂s_k/∂z (w, |z|), held dense (exact path) or as `blocks` [(row offset, g (steps, B, |z|))]
    with A[p, q] = g[q] when p = offset + q mod unit, else 0 (unit path)."""

    def __init__(self, u, width, A=None, blocks=None, unit=None):
        self.u, self.width, self._A, self.blocks, self.unit = u, width, A, blocks, unit

    def matrix(self, i):
        """A of step index i as a dense (B, w, |z|) array."""
        if self._A is not None:
            return self._A[i]
        first = self.blocks[0][1][i]
        A = np.zeros((first.shape[0], self.width, first.shape[-1]))
        q = np.arange(first.shape[-1])
        for offset, g in self.blocks:
            A[:, offset + q % self.unit, q] = g[i]
        return A

    def left(self, live, i):
        """live @ A[i] for live (B, R, w): ∂L/∂z of R losses from their ∂L/∂s_k."""
        if self._A is not None:
            return np.matmul(live, self._A[i])
        total = 0.0
        for offset, g in self.blocks:
            reps = g.shape[-1] // self.unit
            total = total + np.tile(live[..., offset:offset + self.unit], reps) * g[i][:, None, :]
        return total


@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
class LocalJacobians:
    """D and the sites of the requested parameters for the steps `steps` (aligned on axis 0)."""
    steps: np.ndarray      # the step numbers k (1 … T)
    D: np.ndarray          # (steps, B, w, w)
    sites: dict            # twin parameter -> [Site, …]


def _sites_of(out, params, op):
    """{P: [(node, multiplier node or None)]}: the nodes of the graph of `out` that read P directly."""
    found = {P: [] for P in params}
    for node in topological_order(out, grad_only=False):
        for i, parent in enumerate(node.parents or ()):
            if parent in found:
                found[parent].append((node, _multiplier(node, i, op, parent)))
    return found


def _multiplier(node, i, op, P):
    """The u of z = … + u @ P + …, or None when P is added (a bias). Other uses are not linear in P."""
    parents = node.parents
    if node.op in ("affine", "linear"):
        if i % 2 == 1:
            return parents[i - 1]        # inputs (x_1, w_1, x_2, w_2, …, [bias])
        if i == len(parents) - 1:
            return None                  # the bias, last of an odd count
    elif node.op == "matmul" and i == 1:
        return parents[0]
    elif node.op == "add":
        return None
    raise NotImplementedError(f"{op}: parameter {P.name} {tuple(P.shape)} enters the cell through a "
                              f"{node.op!r} node; the analysis handles u @ P (affine, matmul) and + P")


def _state_sites(out, leaves):
    """[(node z, leaf index, weight array)] for every z = … + leaf @ W + … of the cell's graph."""
    index = {id(leaf): i for i, leaf in enumerate(leaves)}
    found = []
    for node in topological_order(out, grad_only=False):
        parents = node.parents or ()
        if node.op in ("affine", "linear"):
            pairs = [(parents[i], parents[i + 1]) for i in range(0, len(parents) - 1, 2)]
        elif node.op == "matmul":
            pairs = [tuple(parents)]
        else:
            continue
        found += [(node, index[id(u)], np.asarray(W.data)) for u, W in pairs if id(u) in index]
    return found


def local_jacobians(rec, steps, params=(), op="analysis", exact=False):
    """LocalJacobians of rec (a Recording) for the given steps (1 … T), in chunks; see the module doc.
    exact=True forces the w-pass path (the unit path is used for the cells of nn/cells.py)."""
    steps = np.asarray(steps, dtype=np.int64)
    w, B = rec.width, rec.B
    unit = not exact and isinstance(rec.cell, UNIT_CELLS)
    rows = max(1, min(CHUNK_ROWS, CHUNK_FLOATS // (w * w))) if unit else CHUNK_ROWS
    per_chunk = max(1, rows // B)
    D = np.empty((len(steps), B, w, w))
    sites = {P: None for P in params}
    for lo in range(0, len(steps), per_chunk):
        ks = steps[lo:lo + per_chunk]
        chunk = _unit_chunk(rec, ks, params, op, D[lo:lo + len(ks)]) if unit else None
        if chunk is None:  # not a unit cell, or a node whose width is no multiple of d
            chunk = _exact_chunk(rec, ks, params, op, D[lo:lo + len(ks)])
        for P, parts in chunk.items():
            if sites[P] is None:
                sites[P] = [_empty_like(part, len(steps)) for part in parts]
            for whole, part in zip(sites[P], parts):
                _assign(whole, part, lo)
    if rec.lengths is not None:  # nn.RNN holds a sequence's state past its length: s_j = s_{j−1}, D_j = I
        padded = steps[:, None] > rec.lengths[None, :]
        D[padded] = np.eye(w)
    return LocalJacobians(steps, D, sites)


def backwards(rec, last, params=(), op="analysis", steps=256):
    """Yield (k, i, local) for k = last … 1: `local` (LocalJacobians) holds step k at index i, computed
    `steps` steps at a time from the end, so a backward sweep holds O(steps·B·w²) floats of D, not T·B·w²."""
    per_chunk = max(1, min(steps, CHUNK_ROWS // rec.B))
    for hi in range(last, 0, -per_chunk):
        lo = max(0, hi - per_chunk)
        local = local_jacobians(rec, np.arange(lo + 1, hi + 1), params, op)
        for i in range(hi - lo - 1, -1, -1):
            yield lo + 1 + i, i, local


def _empty_like(site, n_steps):
    def grow(a):
        return None if a is None else np.empty((n_steps,) + a.shape[1:])
    blocks = None if site.blocks is None else [(o, grow(g)) for o, g in site.blocks]
    return Site(grow(site.u), site.width, grow(site._A), blocks, site.unit)


def _assign(whole, part, lo):
    n = len(part.u) if part.u is not None else len(part._A if part._A is not None else part.blocks[0][1])
    if part.u is not None:
        whole.u[lo:lo + n] = part.u
    if part._A is not None:
        whole._A[lo:lo + n] = part._A
    for (_, g_whole), (_, g_part) in zip(whole.blocks or (), part.blocks or ()):
        g_whole[lo:lo + n] = g_part


def _chunk_inputs(rec, ks, params):
    n, B, w = len(ks), rec.B, rec.width
    states, xs = rec.states(), rec.inputs
    s_prev = states[ks - 1].reshape(n * B, w)
    # x needs a gradient only to reach nodes that read x alone (a GRU's x W_ih + b_ih) for P's sites
    x = Tensor(xs[ks - 1].reshape(n * B, -1), requires_grad=bool(params))
    return s_prev, x


def _exact_chunk(rec, ks, params, op, D):
    """Fill D (n, B, w, w) for steps ks by w unit-seeded backward passes; return {P: [Site]}."""
    n, B, w = len(ks), rec.B, rec.width
    rows, x = _chunk_inputs(rec, ks, params)
    s_prev = Tensor(rows, requires_grad=True)
    out = rec.pack(rec.cell(x, rec.unpack(s_prev)))
    found = _sites_of(out, params, op)
    nodes = [node for pairs in found.values() for node, _ in pairs]
    for node in nodes:
        node.retain_grad()
    grads = {id(node): np.empty((n * B, w) + node.shape[1:]) for node in nodes}
    seed = np.zeros((n * B, w))
    for p in range(w):  # one backward per state component p: row p of every local Jacobian
        s_prev.grad = x.grad = None
        for node in nodes:
            node.grad = None
        seed[:, p] = 1
        out.backward(seed, retain_graph=p < w - 1)
        seed[:, p] = 0
        D[:, :, p] = _rows(s_prev.grad, n, B)
        for node in nodes:
            grads[id(node)][:, p] = _rows(node.grad, n, B).reshape(n * B, -1)
    return {P: [Site(None if u is None else _rows(u.data, n, B), w, A=grads[id(node)].reshape(n, B, w, -1))
                for node, u in pairs] for P, pairs in found.items()}


def _unit_chunk(rec, ks, params, op, D):
    """Fill D (n, B, w, w) for steps ks by one backward per state block (see the module doc)."""
    n, B, w, d = len(ks), rec.B, rec.width, rec.hidden_size
    rows, x = _chunk_inputs(rec, ks, params)
    offsets = (0, d) if rec.paired else (0,)
    leaves = [Tensor(np.ascontiguousarray(rows[:, o:o + d]), requires_grad=True) for o in offsets]
    out = rec.pack(rec.cell(x, tuple(leaves) if rec.paired else leaves[0]))
    state_sites = _state_sites(out, leaves)
    found = _sites_of(out, params, op)
    nodes = {id(z): z for z, _, _ in state_sites}
    nodes.update({id(z): z for pairs in found.values() for z, _ in pairs})
    if any(z.shape[-1] % d for z in nodes.values()):
        return None
    for z in nodes.values():
        z.retain_grad()
    flat = D.reshape(n * B, w, w)
    flat[...] = 0.0
    units = np.arange(d)
    seen = {key: [] for key in nodes}
    seed = np.zeros((n * B, w))
    for bi, o in enumerate(offsets):  # block o: rows o … o + d − 1 of every D_k
        for t in [x, *leaves, *nodes.values()]:
            t.grad = None
        seed[:, o:o + d] = 1
        out.backward(seed, retain_graph=bi < len(offsets) - 1)
        seed[:, o:o + d] = 0
        for key, z in nodes.items():
            seen[key].append(np.zeros((n * B, z.shape[-1])) if z.grad is None
                             else np.array(z.grad, dtype=np.float64).reshape(n * B, -1))
        for li, leaf in enumerate(leaves):
            direct = np.zeros((n * B, d)) if leaf.grad is None else np.array(leaf.grad, dtype=np.float64)
            block = flat[:, o:o + d, offsets[li]:offsets[li] + d]
            for z, lj, W in state_sites:
                if lj != li:
                    continue
                g = seen[id(z)][-1]
                direct -= g @ W.T                           # what the leaf received through z
                G = g.shape[-1] // d                        # gate blocks of z
                # block[:, u, r] += Σ_j g[:, j·d + u] W[r, j·d + u]
                block += np.matmul(g.reshape(-1, G, d).transpose(2, 0, 1),
                                   W.reshape(d, G, d).transpose(2, 1, 0)).transpose(1, 0, 2)
            block[:, units, units] += direct
    return {P: [Site(None if u is None else _rows(u.data, n, B), w,
                     blocks=[(o, g.reshape(n, B, -1)) for o, g in zip(offsets, seen[id(z)])], unit=d)
                for z, u in pairs] for P, pairs in found.items()}


def _rows(array, n, B):
    """Rows (k, b) of a chunk's array back to (k, b, features); a missing gradient is an error."""
    if array is None:
        raise ValueError("analysis: a node of the cell received no gradient")
    return np.asarray(array).reshape(n, B, -1)

def loss_gradients(rec, op="analysis", params=()):
    """(G, head sites): G (T+1, B, w) with G[t] = ∂L_t/∂s_t, the loss of step t seen from its own
    state (row 0 is zero), from one backward of the model's loss over leaf states; and for each
    parameter P of the output side, [(δ (T, B, |z|), u (T, B, m) or None)] per site — the head's
    gradients step by step (zero at steps without a loss)."""
    rec.check_head(op)
    T, B, w = rec.T, rec.B, rec.width
    S = Tensor(rec.states()[1:].copy(), requires_grad=True)
    L = rec.head(S)
    found = _sites_of(L, params, op)
    for pairs in found.values():
        for node, _ in pairs:
            node.retain_grad()
    L.backward()
    G = np.zeros((T + 1, B, w))
    if S.grad is not None:
        G[1:] = S.grad
    head_sites = {}
    for P, pairs in found.items():
        head_sites[P] = [(_per_step(node.grad, T, B), None if u is None else _per_step(u.data, T, B))
                         for node, u in pairs]
    return G, head_sites


def _per_step(array, T, B):
    """A head node's rows as (T, B, features): rows (t, b) of all steps, or B rows of the last step."""
    array = np.asarray(array)
    flat = array.reshape(-1, array.shape[-1])
    if len(flat) == T * B:
        return flat.reshape(T, B, -1)
    if len(flat) == B:
        full = np.zeros((T, B, flat.shape[-1]))
        full[-1] = flat
        return full
    raise NotImplementedError(f"analysis: an output node with {len(flat)} rows fits neither T·B = {T * B} "
                              f"rows (every step) nor B = {B} (the last step)")
