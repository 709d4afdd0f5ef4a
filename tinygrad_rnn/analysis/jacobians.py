"""Jacobians by reverse mode through the engine: generic `jacobian`/`vjp`, the RNN's state Jacobians
∂s_t/∂s_k, and the explicit (immediate) derivative ∂⁺s_k/∂W of the notes.

Row-vector convention of nn.RNN: a_j = x_j U + s_{j−1} W + b, s_j = σ(a_j). Then
∂s_j[p]/∂s_{j−1}[r] = σ'(a_jp) W[r, p], i.e. the matrix diag(σ'(a_j)) Wᵀ. The notes use column vectors,
a_j = W s_{j−1} + …, where the same matrix reads diag(σ'(a_j)) W: their W is our Wᵀ.
"""
import numpy as np

from ..tensor import Tensor, no_grad, topological_order
from . import rerun as _rerun


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


def _check_steps(output, t, k, op):
    T = output.T
    if not (isinstance(t, (int, np.integer)) and isinstance(k, (int, np.integer)) and 0 <= k <= t <= T):
        raise IndexError(f"{op}: need integer steps 0 ≤ k ≤ t ≤ T = {T}, got t = {t!r}, k = {k!r}")


def _states(model, xs, s0):
    """s_0 … s_T of one sequence as arrays (no graph)."""
    states = [s0]
    with no_grad():
        for x in xs:
            states.append(_rerun.step(model, x, Tensor(states[-1])).data)
    return states


def state_jacobian(output, t, k, batch=0):
    """∂s_t/∂s_k for 0 ≤ k ≤ t, shape (d, d): entry [p, r] = ∂s_t[p]/∂s_k[r] (identity when k = t).

    Computed by the engine in reverse mode (one backward per element of s_t) on a float64 rerun of
    steps k+1 … t of sequence `batch`, starting from the recomputed s_k.
    """
    _check_steps(output, t, k, "state_jacobian")
    model = _rerun.twin(output)
    xs, s0, _ = _rerun.sequence(output, batch, "state_jacobian")
    s_k = _states(model, xs[:k], s0)[-1]

    def run(s):
        for x in xs[k:t]:
            s = _rerun.step(model, x, s)
        return s
    return jacobian(run, s_k)


def step_jacobian(output, j, batch=0):
    """∂s_j/∂s_{j−1} = diag(σ'(a_j)) Wᵀ (row-vector convention; the notes' column-vector form is
    diag(σ'(a_j)) W with their W = our Wᵀ). Shape (d, d), [p, r] = σ'(a_jp) W[r, p]."""
    if not isinstance(j, (int, np.integer)) or not 1 <= j <= output.T:
        raise IndexError(f"step_jacobian: need an integer step 1 ≤ j ≤ T = {output.T}, got {j!r}")
    return state_jacobian(output, j, j - 1, batch)


def explicit_grad(output, k, batch=0):
    """The immediate derivative ∂⁺s_k/∂W of the notes: s_{k−1} held fixed, shape (d, d, d).

    Element (p, q, r) = ∂s_k[p]/∂W[q, r]. With a_k = x_k U + s_{k−1} W + b (row vectors) it is
    σ'(a_kp)·s_{k−1,q} when r = p, else 0. The notes (column vectors, a_k = W s_{k−1} + …, their W =
    our Wᵀ) index it as (p, q, r) = σ'(a_kp)·s_{k−1,r} when p = q: their (p, q, r) is our (p, r, q).
    Together with the state Jacobians it gives the total derivative
    ∂s_t/∂W = Σ_{k≤t} ∂s_t/∂s_k · ∂⁺s_k/∂W  (contract ∂s_t/∂s_k's second axis with the first here).
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= output.T:
        raise IndexError(f"explicit_grad: need an integer step 1 ≤ k ≤ T = {output.T}, got {k!r}")
    model = _rerun.twin(output)
    xs, s0, _ = _rerun.sequence(output, batch, "explicit_grad")
    s_prev = Tensor(_states(model, xs[:k - 1], s0)[-1])  # a constant: that is what "explicit" means
    return jacobian(lambda W: _rerun.step(model, xs[k - 1], s_prev, W), model.W.data)


def state_jacobian_rows(output, batch=0):
    """Yield (t, J_t) for t = 1 … T with J_t[k] = ∂s_t/∂s_k for k = 0 … t, shape (t+1, d, d).

    Reverse mode through the engine, vectorised: sequence `batch` is rerun as d identical copies side
    by side (a batch of d), and one backward from s_t with the identity as its gradient gives copy p
    the gradient of s_t[p]: row p of ∂s_t/∂s_k, for every k at once. So T backward passes, not T·d.
    """
    xs, s0, _ = _rerun.sequence(output, batch, "state_jacobian_rows")
    model = _rerun.twin(output)
    d = model.hidden_size
    start = Tensor(np.repeat(s0[None], d, axis=0), requires_grad=True)
    run = model.forward(np.repeat(xs[:, None], d, axis=1), start)
    states = run.states
    for s in states[1:]:
        s.retain_grad()
    nodes = topological_order(states[-1])
    identity = np.eye(d)
    for t in range(1, run.T + 1):
        for n in nodes:
            n.grad = None
        states[t].backward(identity, retain_graph=t < run.T)
        yield t, np.stack([np.zeros((d, d)) if s.grad is None else s.grad for s in states[:t + 1]])


def all_state_jacobians(output, batch=0):
    """J[t, k] = ∂s_t/∂s_k for all 0 ≤ k ≤ t ≤ T (zeros for k > t), shape (T+1, T+1, d, d), from
    `state_jacobian_rows` (memory grows as T²d²: for long sequences iterate over the rows instead)."""
    T, d = output.T, output.model.hidden_size
    J = np.zeros((T + 1, T + 1, d, d))
    J[0, 0] = np.eye(d)
    for t, rows in state_jacobian_rows(output, batch):
        J[t, :t + 1] = rows
    return J
