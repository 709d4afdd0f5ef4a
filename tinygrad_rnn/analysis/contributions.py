"""The BPTT double sum made concrete: C[t−1, k−1] = ∂L_t/∂P(k), the loss at step t reaching the copy of
P used at step k.

    ∂L/∂W = Σ_t Σ_{k≤t} ∂L_t/∂s_t · ∂s_t/∂s_k · ∂⁺s_k/∂W = Σ_t Σ_k C[t, k]

Summing a row (over k) gives ∂L_t/∂P, summing a column (over t) gives ∂L/∂P(k) = tape.step_grads(P)[k],
and the total is P.grad. Vanishing gradients show as C decaying away from the diagonal k = t.
"""
import numpy as np

from . import rerun as _rerun


def contribution_rows(output, P):
    """Yield (t, rows) for t = 1 … T with rows[k−1] = ∂L_t/∂P(k) for k = 1 … t, shape (t, *P.shape).

    One float64 rerun of the whole batch, then one backward per L_t (the graph is retained between
    them), reading each copy P(k).grad. Rows one at a time keep memory at O(T·|P|) for long sequences.
    """
    name = _rerun.parameter_name(output, P, "contributions")
    _rerun.check_targets(output, "contributions")
    model, run = _rerun.rerun(output)
    twin_P = getattr(model, name)
    copies = run.tape.copies(twin_P)
    T = run.T
    for t, L_t in enumerate(run.losses, start=1):
        for c in copies:
            c.grad = None
        L_t.backward(retain_graph=t < T)  # L_t reaches only the copies of steps k ≤ t
        rows = np.zeros((t,) + twin_P.shape)
        for c in copies:
            if c.step <= t and c.grad is not None:
                rows[c.step - 1] = c.grad
        yield t, rows


def contributions(output, P):
    """C with C[t−1, k−1] = ∂L_t/∂P(k) for the loss L_t = Σ_batch CE(y_t, target_t); zero for k > t.

    Parameters
    ----------
    output : RNNOutput from model.loss (it needs targets)
    P : one of the model's parameters (U, W, b, V, c)

    Returns
    -------
    ndarray (T, T, *P.shape), float64, recomputed on a float64 twin of the model (see
    `contribution_rows`); the model's own .grad is never touched. Memory is T²·|P| floats.
    """
    T = output.T
    C = np.zeros((T, T) + P.shape)
    for t, rows in contribution_rows(output, P):
        C[t - 1, :t] = rows
    return C


def contribution_norms(output, P):
    """(T, T) Frobenius norms ‖∂L_t/∂P(k)‖ (rows t, columns k; zero for k > t), computed row by row."""
    T = output.T
    norms = np.zeros((T, T))
    for t, rows in contribution_rows(output, P):
        norms[t - 1, :t] = np.sqrt((rows.reshape(t, -1) ** 2).sum(axis=1))
    return norms


def step_grads(output, P):
    """∂L/∂P(k) for k = 1 … T, shape (T, *P.shape): the column sums of the contributions (what
    tape.step_grads(P) holds after L.backward(), recomputed so it works without that backward)."""
    total = np.zeros((output.T,) + P.shape)
    for t, rows in contribution_rows(output, P):
        total[:t] += rows
    return total
