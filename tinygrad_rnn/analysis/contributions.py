"""The BPTT double sum made concrete: C[t−1, k−1] = ∂L_t/∂P(k), the loss at step t reaching the copy of
P used at step k.

    ∂L/∂W = Σ_t Σ_{k≤t} ∂L_t/∂s_t · ∂s_t/∂s_k · ∂⁺s_k/∂W = Σ_t Σ_k C[t, k]

Summing a row (over k) gives ∂L_t/∂P, summing a column (over t) gives ∂L/∂P(k) = tape.step_grads(P)[k],
and the total is P.grad. Vanishing gradients show as C decaying away from the diagonal k = t.

How it is computed (any cell): the losses' state gradients are carried back all at once. With
g_{t,k} = ∂L_t/∂s_k, the rows t ≥ k form a matrix G_k, and G_{k−1} = G_k D_k (D_k = ∂s_k/∂s_{k−1}, see
local.py), so one step back costs one (T × w)(w × w) product. At step k, each site z = u @ P of P gives
δ_{t} = g_{t,k} ∂s_k/∂z and ∂L_t/∂P(k) = Σ_sites, sequences u ⊗ δ_t. Cost O(T²·B·w²/2) multiply-adds
plus the local Jacobians (O(T·B·w) cell rows); norms need no dense T×T×|P| array (a Gram identity,
‖Σ_i u_i ⊗ δ_i‖² = Σ_ij (u_i·u_j)(δ_i·δ_j)). Output-side parameters (V, c, a head) reach only their
own step: their C is diagonal.
"""
import numpy as np

from .local import backwards, local_jacobians, loss_gradients
from .recording import recording

_COLUMN_STEPS = 256  # step Jacobians held at a time (memory O(_COLUMN_STEPS · B · w · gate width))


def _twin_parameter(rec, P, op):
    rec.check_head(op)
    return rec.parameter(P, op)


def columns(output, P, op="contributions"):
    """Yield (k, terms) for k = T … 1: terms is a list of (u (B, m) or None, δ (B, T−k+1, |z|)), one per
    site of P in step k, with ∂L_t/∂P(k) = Σ_terms Σ_b u_b ⊗ δ[b, t−k] (a bias: Σ_b δ[b, t−k]).
    For an output-side parameter, terms hold only row t = k (the rest is zero)."""
    rec = recording(output)
    name, twin_P = _twin_parameter(rec, P, op)
    G, head = loss_gradients(rec, op, [twin_P])
    T, B = rec.T, rec.B
    head_terms = head[twin_P]
    if head_terms:  # an output-side parameter reaches only its own step's loss: no adjoint needed
        for k in range(T, 0, -1):
            terms = []
            for delta, u in head_terms:
                rows = np.zeros((B, T - k + 1, delta.shape[-1]))
                rows[:, 0] = delta[k - 1]
                terms.append((None if u is None else u[k - 1], rows))
            yield k, terms
        return
    adjoint = np.zeros((B, T, rec.width))  # adjoint[b, t−1] = ∂L_t/∂s_k for the current k (rows t ≥ k)
    for k, i, local in backwards(rec, T, [twin_P], op, _COLUMN_STEPS):
        if not local.sites[twin_P]:
            raise ValueError(f"{op}: {name} enters neither the recurrent cell nor the loss of {rec.label} "
                             f"(an input-side table such as an embedding has no per-step Jacobian here)")
        adjoint[:, k - 1] = G[k]
        live = adjoint[:, k - 1:]                                       # (B, T−k+1, w)
        yield k, [(None if s.u is None else s.u[i], s.left(live, i)) for s in local.sites[twin_P]]
        adjoint[:, k - 1:] = np.matmul(live, local.D[i])


def _dense(terms, shape):
    """Σ_terms Σ_b u_b ⊗ δ_b for every row: (rows, *shape)."""
    total = None
    for u, delta in terms:
        part = delta.sum(axis=0) if u is None else np.einsum("bm,btz->tmz", u, delta)
        total = part if total is None else total + part
    return total.reshape((len(total),) + shape)


def _norms(terms):
    """‖Σ_terms Σ_b u_b ⊗ δ_b‖_F for every row, without forming the outer products."""
    us = np.concatenate([np.ones((len(d), 1)) if u is None else u for u, d in terms])       # (I, m)
    deltas = np.concatenate([d for _, d in terms])                                           # (I, rows, z)
    same_width = len({u.shape[-1] for u, _ in terms if u is not None}) <= 1
    if not same_width:  # sites of different input widths cannot be stacked: form them (rare)
        dense = _dense(terms, (-1,))
        return np.sqrt((dense ** 2).sum(axis=1))
    gram_u = us @ us.T                                                                        # (I, I)
    gram_d = np.einsum("itz,jtz->tij", deltas, deltas)                                        # (rows, I, I)
    return np.sqrt(np.maximum(np.einsum("ij,tij->t", gram_u, gram_d), 0.0))


def _transposed(C, convention, ndim):
    """The notes' column convention stores a weight as our transpose: swap its two axes."""
    if convention not in ("row", "column"):
        raise ValueError(f"contributions: convention must be 'row' or 'column', got {convention!r}")
    return np.swapaxes(C, -1, -2) if convention == "column" and ndim == 2 else C


def contributions(output, P, convention="row"):
    """C with C[t−1, k−1] = ∂L_t/∂P(k) for the model's losses L_t; zero for k > t.

    Parameters
    ----------
    output : RNNOutput from model.loss (any cell), or a Recording (analysis.record) of an architecture
    P : a Parameter of the model (U, W, b, V, c, cell.weight_hh, …) or its dotted name
    convention : "row" (our layout) or "column" (the notes': a matrix P is transposed)

    Returns
    -------
    ndarray (T, T, *P.shape), float64 on a twin of the model; .grad is never touched. Memory is
    T²·|P| floats (use contribution_norms for long sequences). Cost: see the module docstring.
    """
    rec = recording(output)
    _, twin_P = rec.parameter(P, "contributions")
    T = rec.T
    C = np.zeros((T, T) + twin_P.shape)
    for k, terms in columns(rec, P):
        C[k - 1:, k - 1] = _dense(terms, twin_P.shape)
    return _transposed(C, convention, twin_P.ndim)


def contribution_rows(output, P):
    """Yield (t, rows) for t = 1 … T with rows[k−1] = ∂L_t/∂P(k) for k = 1 … t (from `contributions`)."""
    C = contributions(output, P)
    for t in range(1, len(C) + 1):
        yield t, C[t - 1, :t]


def contribution_norms(output, P):
    """(T, T) Frobenius norms ‖∂L_t/∂P(k)‖ (rows t, columns k; zero for k > t), without the dense
    T×T×|P| array. Cost O(T²·B·w²/2) multiply-adds (the adjoint products; the sites' ∂s_k/∂z are
    applied in their compressed form, O(T²·B·gate width)), memory O(T² + 256·B·w²) (the step Jacobians
    stream from the end, 256 steps at a time): at T = 1000, d = 128, one BLAS thread on 2 shared vCPUs,
    0.70 s for the vanilla W, 3.1 s for the LSTM's weight_hh, peak RSS 154 / 359 MB
    (benchmarks/bench_analysis.py)."""
    rec = recording(output)
    T = rec.T
    norms = np.zeros((T, T))
    for k, terms in columns(rec, P, "contribution_norms"):
        norms[k - 1:, k - 1] = _norms(terms)
    return norms


def step_grads(output, P, convention="row"):
    """∂L/∂P(k) for k = 1 … T, shape (T, *P.shape): the column sums of the contributions (what
    tape.step_grads(P) holds after L.backward(), recomputed so it works without that backward)."""
    rec = recording(output)
    _, twin_P = rec.parameter(P, "step_grads")
    total = np.zeros((rec.T,) + twin_P.shape)
    for k, terms in columns(rec, P, "step_grads"):
        summed = [(u, delta.sum(axis=1, keepdims=True)) for u, delta in terms]
        total[k - 1] = _dense(summed, twin_P.shape)[0]
    return _transposed(total, convention, twin_P.ndim)


def loss_state_gradients(output, t=None):
    """g (t+1, B, w) with g[k] = ∂L_t/∂s_k for k = 0 … t (default t = T; for a many-to-one model
    L_T is the whole loss), carried back by the step Jacobians: t products of (B × w)(w × w)."""
    rec = recording(output)
    t = rec.T if t is None else t
    if not isinstance(t, (int, np.integer)) or not 1 <= t <= rec.T:
        raise IndexError(f"loss_state_gradients: need an integer step 1 ≤ t ≤ T = {rec.T}, got {t!r}")
    G, _ = loss_gradients(rec, "loss_state_gradients")
    D = local_jacobians(rec, np.arange(1, t + 1), op="loss_state_gradients").D
    g = np.zeros((t + 1, rec.B, rec.width))
    g[t] = G[t]
    for k in range(t, 0, -1):
        g[k - 1] = np.einsum("bw,bwv->bv", g[k], D[k - 1])
    return g
