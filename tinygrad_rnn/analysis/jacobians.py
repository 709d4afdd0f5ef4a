"""Jacobians by reverse mode through the engine: generic `jacobian`/`vjp`, the state Jacobians
∂s_t/∂s_k of any cell, and the explicit (immediate) derivative ∂⁺s_k/∂P of the notes.

Row-vector convention of nn.RNN: a_j = x_j U + s_{j−1} W + b, s_j = σ(a_j). Then
∂s_j[p]/∂s_{j−1}[r] = σ'(a_jp) W[r, p], i.e. the matrix diag(σ'(a_j)) Wᵀ. The notes use column vectors,
a_j = W' s_{j−1} + …, where the same matrix reads diag(σ'(a_j)) W': their W' is our Wᵀ
(`convention="column"` expresses weights and explicit tensors that way).

∂s_t/∂s_k = D_t D_{t−1} ⋯ D_{k+1} is a chained product of the step Jacobians D_j = ∂s_j/∂s_{j−1}, which
come from the engine for every step at once (local.py): one row of ∂s_t/∂s_k costs one d×d
product per step back, never a backward pass over the whole sequence. For the LSTM the state is
s = [h | c] (width 2d): `part="h"` or `"c"` picks a block, `part="carousel"` the product of the c → c
blocks alone, Π_j diag(f_j) (the forget gates: the "constant error carousel" path, h held fixed).
"""
import numpy as np

from ..tensor import Tensor, topological_order
from .local import local_jacobians
from .recording import recording

CONVENTIONS = ("row", "column")
PARTS = ("state", "h", "c", "carousel")


def _leaf(x):
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind != "f":
        data = data.astype(np.float64)
    return Tensor(np.array(data), requires_grad=True)


def _call(fn, x, op):
    out = fn(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: fn must return a Tensor, got {type(out).__name__}")
    return out


class _SavedGrads:
    """Save the gradient every node of a graph holds, clear them for our passes and put them back
    afterwards, so a Jacobian of a function that uses the caller's parameters leaves their .grad (and
    their copies' .grad) exactly as it was."""

    def __init__(self, root, skip):
        self.nodes = [n for n in topological_order(root) if n is not skip]
        self.saved = [n.grad for n in self.nodes]

    def clear(self):
        for n in self.nodes:
            n.grad = None

    def restore(self):
        for n, g in zip(self.nodes, self.saved):
            n.grad = g


def jacobian(fn, x):
    """∂fn(x)/∂x by reverse mode: one backward per output element.

    Parameters
    ----------
    fn : callable taking a Tensor of x's shape and returning a Tensor (built with the engine's ops)
    x : ndarray or Tensor, the point (its values are copied into a fresh leaf that requires grad)

    Returns
    -------
    ndarray of shape out.shape + x.shape: J[i..., j...] = ∂out[i...]/∂x[j...]. Gradients that other
    tensors used by fn hold (e.g. a model's .grad) are left unchanged.
    """
    leaf = _leaf(x)
    out = _call(fn, leaf, "jacobian")
    J = np.zeros(out.shape + leaf.shape, dtype=np.result_type(out.dtype, leaf.dtype))
    if not out.requires_grad:
        return J  # out does not depend on anything that requires grad
    rows = J.reshape(out.size, leaf.size)
    saved = _SavedGrads(out, leaf)
    try:
        seed = np.zeros(out.shape, dtype=out.dtype)
        for i in range(out.size):
            saved.clear()
            leaf.grad = None
            seed.flat[i] = 1
            out.backward(seed, retain_graph=True)  # one graph, out.size passes
            seed.flat[i] = 0
            if leaf.grad is not None:
                rows[i] = leaf.grad.reshape(-1)
    finally:
        saved.restore()
    return J


def vjp(fn, x, v):
    """The vector-Jacobian product vᵀ ∂fn(x)/∂x (one backward), an ndarray of x's shape.

    v has the shape of fn(x). Other tensors' .grad are left unchanged, as in `jacobian`.
    """
    leaf = _leaf(x)
    out = _call(fn, leaf, "vjp")
    v = np.asarray(v.data if isinstance(v, Tensor) else v, dtype=out.dtype)
    if v.shape != out.shape:
        raise ValueError(f"vjp: v has shape {v.shape} but fn(x) has shape {out.shape}")
    if not out.requires_grad:
        return np.zeros_like(leaf.data)
    saved = _SavedGrads(out, leaf)
    try:
        saved.clear()
        out.backward(v, retain_graph=True)  # fn may use tensors of a graph the caller still needs
        return leaf.grad if leaf.grad is not None else np.zeros_like(leaf.data)
    finally:
        saved.restore()


def _convention(convention, op):
    if convention not in CONVENTIONS:
        raise ValueError(f"{op}: convention must be 'row' or 'column', got {convention!r}")
    return convention


def _check_part(rec, part, op):
    if part not in PARTS:
        raise ValueError(f"{op}: part must be one of {PARTS}, got {part!r}")
    if part in ("c", "carousel") and not rec.paired:
        raise ValueError(f"{op}: part={part!r} needs an LSTM (state (h, c)); this model's cell is "
                         f"{rec.cell_type!r} with state h only")
    return part


def _block(J, rec, part):
    """The rows/columns of the packed-state matrices J (…, w, w) that `part` names."""
    d = rec.hidden_size
    if part == "h":
        return J[..., :d, :d]
    if part in ("c", "carousel"):
        return J[..., d:, d:]
    return J


def step_jacobians(output, batch=0, part="state"):
    """D (T, w', w') with D[j−1] = ∂s_j/∂s_{j−1} of sequence `batch` for j = 1 … T (a block of it for
    part="h"/"c"; "carousel" is the c → c block). One engine pass over all steps (see local.py)."""
    rec = recording(output)
    b = rec.sequence(batch, "step_jacobians")
    _check_part(rec, part, "step_jacobians")
    return _block(local_jacobians(rec, np.arange(1, rec.T + 1), op="step_jacobians").D[:, b], rec, part)


def _chain(D, part, rec):
    """Step Jacobians to chain: the full ones, or (carousel) their c → c blocks only."""
    return _block(D, rec, "carousel") if part == "carousel" else D


def _check_steps(rec, t, k, op):
    T = rec.T
    if not (isinstance(t, (int, np.integer)) and isinstance(k, (int, np.integer)) and 0 <= k <= t <= T):
        raise IndexError(f"{op}: need integer steps 0 ≤ k ≤ t ≤ T = {T}, got t = {t!r}, k = {k!r}")


def state_jacobian(output, t, k, batch=0, part="state"):
    """∂s_t/∂s_k for 0 ≤ k ≤ t, shape (w, w): entry [p, r] = ∂s_t[p]/∂s_k[r] (identity when k = t).

    The chained product D_t ⋯ D_{k+1} of the engine's step Jacobians (float64 rerun of sequence
    `batch`). This matrix is the same in both conventions (numerator layout). For an LSTM w = 2d
    (s = [h | c]); part="h"/"c" returns a block, part="carousel" Π_j diag(f_j) (c → c alone).
    Cost: t − k step Jacobians and t − k products of w×w matrices.
    """
    rec = recording(output)
    _check_steps(rec, t, k, "state_jacobian")
    b = rec.sequence(batch, "state_jacobian")
    _check_part(rec, part, "state_jacobian")
    full = np.eye(rec.width)
    if t > k:
        D = local_jacobians(rec, np.arange(k + 1, t + 1), op="state_jacobian").D[:, b]
        D = _chain(D, part, rec)
        full = np.eye(D.shape[-1])
        for Dj in D:
            full = Dj @ full
        return full if part == "carousel" else _block(full, rec, part)
    return _block(full, rec, part)


def step_jacobian(output, j, batch=0, convention="row", part="state"):
    """∂s_j/∂s_{j−1}, shape (w, w), [p, r] = ∂s_j[p]/∂s_{j−1}[r].

    Vanilla cell: row convention diag(σ'(a_j)) Wᵀ (entry σ'(a_jp) W[r, p]); convention="column" reads
    the same matrix the notes' way, diag(σ'(a_j)) W' with their W' = our Wᵀ (so the numbers agree; what
    changes between conventions is how the weights and the explicit tensors are indexed).
    """
    _convention(convention, "step_jacobian")
    rec = recording(output)
    if not isinstance(j, (int, np.integer)) or not 1 <= j <= rec.T:
        raise IndexError(f"step_jacobian: need an integer step 1 ≤ j ≤ T = {rec.T}, got {j!r}")
    return state_jacobian(rec, j, j - 1, batch, part)


def state_jacobian_rows(output, batch=0, part="state"):
    """Yield (t, J_t) for t = 1 … T with J_t[k] = ∂s_t/∂s_k for k = 0 … t, shape (t+1, w', w').

    Row t is D_t times row t−1 (plus the identity at k = t): T step Jacobians from one engine pass,
    then t products of w×w matrices for row t — O(T²w³/2) in all, O(T·w²) memory at a time.
    """
    rec = recording(output)
    b = rec.sequence(batch, "state_jacobian_rows")
    _check_part(rec, part, "state_jacobian_rows")
    D = _chain(local_jacobians(rec, np.arange(1, rec.T + 1), op="state_jacobian_rows").D[:, b], part, rec)
    w = D.shape[-1]
    rows = np.eye(w)[None]
    for t in range(1, rec.T + 1):
        rows = np.concatenate([np.matmul(D[t - 1], rows), np.eye(w)[None]])
        yield t, (rows if part in ("state", "carousel") else _block(rows, rec, part))


def all_state_jacobians(output, batch=0, part="state"):
    """J[t, k] = ∂s_t/∂s_k for all 0 ≤ k ≤ t ≤ T (zeros for k > t), shape (T+1, T+1, w', w'), from
    `state_jacobian_rows` (memory grows as T²w²: for long sequences iterate over the rows instead)."""
    rec = recording(output)
    J = None
    for t, rows in state_jacobian_rows(rec, batch, part):
        if J is None:
            J = np.zeros((rec.T + 1, rec.T + 1) + rows.shape[1:])
            J[0, 0] = np.eye(rows.shape[-1])
        J[t, :t + 1] = rows
    return J


def recurrent_weight(rec):
    """The dotted name of the cell's recurrent weight (W of the vanilla cell, weight_hh of GRU/LSTM)."""
    target = getattr(rec.cell, "W", None)
    target = getattr(rec.cell, "weight_hh", None) if target is None else target
    for name, P in rec.model.named_parameters():
        if P is target:
            return name
    raise ValueError(f"analysis: {rec.label} has no recurrent weight W / weight_hh")


def step_arguments(output, k, P, batch, convention, op):
    """(Recording, batch index, P's name, the twin's P) after checking a step 1 ≤ k ≤ T, the batch index,
    the convention and P (default: the recurrent weight), each with an error naming `op`."""
    _convention(convention, op)
    rec = recording(output)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= rec.T:
        raise IndexError(f"{op}: need an integer step 1 ≤ {'t' if op == 'decompose' else 'k'} ≤ T = {rec.T}, got {k!r}")
    b = rec.sequence(batch, op)
    if rec.lengths is not None and k > rec.lengths[b]:  # s_k is s_{k−1} held: no explicit part to show
        raise ValueError(f"{op}: step {k} is padding of sequence {batch} (length {rec.lengths[b]}); "
                         f"ask for a step ≤ {rec.lengths[b]}")
    name, twin_P = rec.parameter(recurrent_weight(rec) if P is None else P, op)
    return rec, b, name, twin_P


def explicit_grad(output, k, P=None, batch=0, convention="row"):
    """The immediate derivative ∂⁺s_k/∂P of the notes: s_{k−1} held fixed, shape (w, *P.shape).

    Default P: the recurrent weight (W, or weight_hh of a gated cell). For the vanilla W, element
    (p, q, r) = ∂s_k[p]/∂W[q, r] = σ'(a_kp)·s_{k−1,q} when r = p, else 0 (row convention,
    a_k = x_k U + s_{k−1} W + b). convention="column" indexes it as the notes do (column vectors,
    a_k = W' s_{k−1} + …, W' = Wᵀ): (p, q, r) = ∂s_k[p]/∂W'[q, r] = σ'(a_kp)·s_{k−1,r} when p = q —
    the row tensor with its last two axes swapped. With the state Jacobians it gives the total
    derivative ∂s_t/∂W = Σ_{k≤t} ∂s_t/∂s_k · ∂⁺s_k/∂W (see decompose).
    """
    rec, b, name, twin_P = step_arguments(output, k, P, batch, convention, "explicit_grad")
    local = local_jacobians(rec, [k], [twin_P], op="explicit_grad")
    E = np.zeros((rec.width,) + twin_P.shape)
    for site in local.sites[twin_P]:
        A = site.matrix(0)[b]
        E += A if site.u is None else np.einsum("q,pr->pqr", site.u[0, b], A)
    return np.swapaxes(E, 1, 2) if convention == "column" and E.ndim == 3 else E
