"""The local (one-step) derivatives every BPTT formula is built from, for any cell, by the engine.

For step k, with the packed state s (see recording.py) and the cell s_k = f(x_k, s_{k−1}; θ):

- D_k = ∂s_k/∂s_{k−1}, shape (w, w): D_k[p, r] = ∂s_k[p]/∂s_{k−1}[r];
- for a parameter P, its *sites* in the step: every node z = … + u @ P + … (or z = … + P, a bias)
  of the cell's graph. The explicit derivative ∂⁺s_k/∂P is then Σ_sites A ⊗ u with A = ∂s_k/∂z (w, |z|):
  ∂⁺s_k[p]/∂P[q, r] = Σ_sites u_q A[p, r]  (a bias: A[p, r]).

All of them come from ONE forward of the cell over every step at once (the steps' inputs (x_k, s_{k−1})
side by side as a batch of rows (k, b)) and w backward passes through that small graph: pass p seeds
every row with the unit vector e_p, so the gradients it leaves are row p of every step's Jacobian. Cost:
w backward passes over T·B rows, O(T·B·w·(cost of one cell row)) — for the vanilla cell T·B·w·(n + d)·d
multiply-adds — in chunks of at most CHUNK_ROWS rows; memory O(T·B·w·(w + gate width)) for the results.
"""
from dataclasses import dataclass

import numpy as np

from ..tensor import Tensor, topological_order

CHUNK_ROWS = 1 << 14


@dataclass
class Site:
    """Where P enters one step: A[k, b] = ∂s_k/∂z (w, |z|) and the multiplier u[k, b] (None for a bias)."""
    A: np.ndarray          # (steps, B, w, |z|)
    u: np.ndarray          # (steps, B, m) or None


@dataclass
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


def local_jacobians(rec, steps, params=(), op="analysis"):
    """LocalJacobians of rec (a Recording) for the given steps (1 … T), in chunks; see the module doc."""
    steps = np.asarray(steps, dtype=np.int64)
    w, B = rec.width, rec.B
    states, xs = rec.states(), rec.inputs
    per_chunk = max(1, CHUNK_ROWS // B)
    D = np.empty((len(steps), B, w, w))
    sites = {P: None for P in params}
    for lo in range(0, len(steps), per_chunk):
        ks = steps[lo:lo + per_chunk]
        n = len(ks)
        s_prev = Tensor(states[ks - 1].reshape(n * B, w), requires_grad=True)
        # x needs a gradient only to reach nodes that read x alone (a GRU's x W_ih + b_ih) for P's sites
        x = Tensor(xs[ks - 1].reshape(n * B, -1), requires_grad=bool(params))
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
            D[lo:lo + n, :, p] = _rows(s_prev.grad, n, B)
            for node in nodes:
                grads[id(node)][:, p] = _rows(node.grad, n, B).reshape(n * B, -1)
        for P, pairs in found.items():
            chunk = [Site(grads[id(node)].reshape(n, B, w, -1), None if u is None else _rows(u.data, n, B))
                     for node, u in pairs]
            if sites[P] is None:
                sites[P] = [Site(np.empty((len(steps),) + s.A.shape[1:]),
                                 None if s.u is None else np.empty((len(steps),) + s.u.shape[1:])) for s in chunk]
            for whole, part in zip(sites[P], chunk):
                whole.A[lo:lo + n] = part.A
                if part.u is not None:
                    whole.u[lo:lo + n] = part.u
    return LocalJacobians(steps, D, sites)


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
