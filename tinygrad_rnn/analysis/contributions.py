"""The BPTT double sum made concrete: C[t−1, k−1] = ∂L_t/∂P(k), the loss at step t reaching the copy of
P used at step k.

    ∂L/∂W = Σ_t Σ_{k≤t} ∂L_t/∂s_t · ∂s_t/∂s_k · ∂⁺s_k/∂W = Σ_t Σ_k C[t, k]

Summing a row (over k) gives ∂L_t/∂P, summing a column (over t) gives ∂L/∂P(k) = tape.step_grads(P)[k],
and the total is P.grad. Vanishing gradients show as C decaying away from the diagonal k = t.
"""
import numpy as np

from . import rerun as _rerun


def contributions(output, P):
    """C with C[t−1, k−1] = ∂L_t/∂P(k) for the loss L_t = Σ_batch CE(y_t, target_t); zero for k > t.

    Parameters
    ----------
    output : RNNOutput from model.loss (it needs targets)
    P : one of the model's parameters (U, W, b, V, c)

    Returns
    -------
    ndarray (T, T, *P.shape), float64. Recomputed on a float64 twin of the model: one rerun, then one
    backward per L_t, reading each copy P(k).grad; the model's own .grad is never touched.
    """
    name = _rerun.parameter_name(output, P, "contributions")
    _rerun.check_targets(output, "contributions")
    model, run = _rerun.rerun(output)
    twin_P = getattr(model, name)
    copies = run.tape.copies(twin_P)
    T = run.T
    C = np.zeros((T, T) + twin_P.shape)
    for t, L_t in enumerate(run.losses, start=1):
        for c in copies:
            c.grad = None
        L_t.backward(retain_graph=t < T)  # L_t reaches only the copies of steps k ≤ t
        for c in copies:
            if c.step <= t and c.grad is not None:
                C[t - 1, c.step - 1] = c.grad
    return C


def contribution_norms(output, P):
    """(T, T) Frobenius norms ‖∂L_t/∂P(k)‖ of `contributions(output, P)` (rows t, columns k)."""
    C = contributions(output, P)
    return np.sqrt((C.reshape(C.shape[0], C.shape[1], -1) ** 2).sum(axis=-1))
