"""Truncated BPTT, in the three forms the notes and the literature use, and what each leaves out.

- segments of k steps (the notes' "updates over segments of fixed length"): the state is carried forward
  detached and each segment is backpropagated on its own — `truncated_bptt(model, xs, targets, k)`;
- TBPTT(k1, k2) (Williams & Peng): every k1 steps, the losses of those k1 steps are backpropagated k2 ≥ k1
  steps back — `tbptt(model, xs, targets, k1, k2)`; segments are TBPTT(k, k);
- τ terms per loss (the notes' restricted product: ∂L_t reaches back τ steps, Σ_{k=t−τ+1}^{t}) —
  TBPTT(1, τ), `truncation_bias(out, tau=τ)`.

Each keeps exactly the BPTT contributions ∂L_t/∂P(k) of a mask over (t, k) (`truncation_mask`), so the
truncated gradient is the full double sum with the other contributions left out. `truncated_gradcheck`
checks such gradients against finite differences of the truncated surrogate (every update's losses with
its start state frozen), and `truncation_bias` reports, per step, full minus truncated gradient.
"""
from dataclasses import dataclass

import numpy as np

from ..gradcheck import check_close, finite_differences
from ..ops import stack
from ..tensor import no_grad
from .contributions import _dense, columns, contributions
from .recording import recording


def _positive(value, what, op):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{op}: {what} must be a positive integer, got {value!r}")
    return int(value)


def updates(T, k1, k2, op="tbptt"):
    """[(start, end_prev, end)]: the update at step `end` backpropagates the losses of steps end_prev+1 … end
    through the steps start+1 … end, start = max(0, end_prev + k1 − k2): k2 steps back from where the
    update is due, so a last, shorter update (end = T) keeps the same window start and TBPTT(k, k) is
    exactly segments of k, TBPTT(1, τ) exactly τ terms per loss. Updates are due every k1 steps and at T."""
    k1, k2 = _positive(k1, "k1", op), _positive(k2, "k2", op)
    if k2 < k1:
        raise ValueError(f"{op}: need k2 ≥ k1 (the losses of an update must lie inside its backward window), "
                         f"got k1 = {k1}, k2 = {k2}")
    ends = list(range(k1, T, k1)) + [T]
    return [(max(0, prev + k1 - k2), prev, end) for prev, end in zip([0] + ends[:-1], ends)]


def truncation_mask(T, k=None, *, tau=None, k1=None, k2=None, op="truncation_mask"):
    """(T, T) booleans M[t−1, j−1]: does truncation keep ∂L_t/∂P(j)? Exactly one of: k (segments),
    tau (τ terms per loss: 0 ≤ t − j < τ) or k1 and k2 (TBPTT(k1, k2))."""
    k1, k2 = _scheme(k, tau, k1, k2, op)
    t, j = np.meshgrid(np.arange(1, T + 1), np.arange(1, T + 1), indexing="ij")
    mask = np.zeros((T, T), dtype=bool)
    for start, prev, end in updates(T, k1, k2, op):
        rows = (t > prev) & (t <= end)
        mask |= rows & (j > start) & (j <= t)
    return mask


def _scheme(k, tau, k1, k2, op):
    """(k1, k2) of the one truncation that was asked for."""
    given = [name for name, v in (("k", k), ("tau", tau), ("k1/k2", k1 if k1 is not None else k2)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"{op}: give exactly one of k (segments), tau (τ terms per loss) or k1 and k2 "
                         f"(TBPTT), got {given or 'none'}")
    if k is not None:
        k = _positive(k, "k (steps per segment)", op)
        return k, k
    if tau is not None:
        return 1, _positive(tau, "tau (steps each loss reaches back)", op)
    if k1 is None or k2 is None:
        raise ValueError(f"{op}: TBPTT needs both k1 and k2, got k1 = {k1!r}, k2 = {k2!r}")
    return k1, k2


def _as_array(x):
    return np.asarray(getattr(x, "data", x))


def _final_state(out, lstm, i=-1):
    """The state after step i of a run, detached (an LSTM's (h, c): both are carried)."""
    h = out.states[i].detach()
    return (h, out.cell_states[i].detach()) if lstm else h


def tbptt(model, xs, targets, k1, k2, optimizer=None, *, s0=None):
    """TBPTT(k1, k2) on an nn.RNN (any cell): every k1 steps, backpropagate the losses of those steps
    through the last k2 steps; returns the losses of each update (floats, summing to the full loss
    when no optimizer changes the weights).

    The run of an update starts from the state k2 steps back, detached (an LSTM carries (h, c)).
    optimizer : object with .zero_grad() and .step(), or None. Given, each update runs zero_grad(),
        backward, step(); without one the updates' gradients accumulate in the parameters' .grad.
    s0 : initial state (an LSTM's (h0, c0)); default zeros.
    """
    xs, targets = _as_array(xs), _as_array(targets)
    lstm = getattr(model, "cell_type", "rnn") == "lstm"
    windows = updates(len(xs), k1, k2)
    state, losses = s0, []
    for i, (start, prev, end) in enumerate(windows):
        if optimizer is not None:
            optimizer.zero_grad()
        _, out = model.loss(xs[start:end], targets[start:end], state)
        L = stack(out.losses[prev - start:]).sum()
        L.backward()
        if optimizer is not None:
            optimizer.step()
        if i + 1 < len(windows):  # the next window starts inside this one (k2 ≥ k1): carry its state
            state = _final_state(out, lstm, windows[i + 1][0] - start)
        losses.append(L.item())
    return losses


def truncated_bptt(model, xs, targets, k, optimizer=None, *, s0=None):
    """Truncated BPTT over segments of k steps, TBPTT(k, k); returns the per-segment losses (floats).

    Parameters
    ----------
    model : nn.RNN (cell "rnn", "gru" or "lstm")
    xs, targets : inputs (T, B, n) or (T, n) and integer targets (T, B) or (T,), as for model.loss
    k : steps per segment (the last segment may be shorter); k ≥ T is full BPTT
    optimizer : object with .zero_grad() and .step(), or None. Given, each segment runs
        zero_grad(), backward, step() (so later segments see the updated weights). Without one,
        the segments' gradients accumulate in the parameters' .grad (nothing is zeroed first).
    s0 : initial state (default zeros; an LSTM's (h0, c0))
    """
    k = _positive(k, "k (steps per segment)", "truncated_bptt")
    return tbptt(model, xs, targets, k, k, optimizer, s0=s0)


def truncated_contributions(output, P, k=None, *, tau=None, k1=None, k2=None):
    """C[t−1, j−1] = ∂L_t/∂P(j) under truncation (segments of k steps, τ terms per loss, or TBPTT(k1, k2)):
    the full `contributions` where `truncation_mask` keeps them, exactly zero elsewhere. Summed, it is
    the gradient the truncated training puts on P."""
    C = contributions(output, P)
    mask = truncation_mask(len(C), k, tau=tau, k1=k1, k2=k2, op="truncated_contributions")
    return C * mask.reshape(mask.shape + (1,) * (C.ndim - 2))


def _surrogate(model, xs, targets, windows):
    """Σ_updates (their losses) with every update's start state frozen."""
    total = 0.0
    for start, prev, end, state in windows:
        _, out = model.loss(xs[start:end], targets[start:end], state)
        total += float(sum(L.item() for L in out.losses[prev - start:]))
    return total


def truncated_gradcheck(model, xs, targets, k=None, eps=1e-6, atol=1e-5, rtol=1e-3, *, s0=None, k1=None, k2=None):
    """Check truncated BPTT's gradients (segments of k, or TBPTT(k1, k2)) against central finite
    differences of the truncated surrogate.

    Truncated gradients are not derivatives of the loss, so an ordinary gradcheck fails on them. They are
    the exact derivatives of the surrogate Σ_updates L_update(θ; s_start frozen), which this function
    differentiates numerically, in float64, element by element of every parameter (any cell: an LSTM's
    frozen start state is the pair (h, c)). Parameters and their .grad are restored.

    Returns True, or raises GradcheckError naming the parameter, the element, both values and the scheme.
    """
    op = "truncated_gradcheck"
    k1, k2 = _scheme(k, None, k1, k2, op)
    scheme = f"k = {k}" if k is not None else f"TBPTT(k1 = {k1}, k2 = {k2})"
    xs = _as_array(xs).astype(np.float64)
    targets = _as_array(targets)
    lstm = getattr(model, "cell_type", "rnn") == "lstm"
    params = model.parameters()
    saved = [(p.data, p.grad) for p in params]
    try:
        for p in params:
            p.data, p.grad = p.data.astype(np.float64), None
        tbptt(model, xs, targets, k1, k2, s0=s0)
        analytic = [p.grad if p.grad is not None else np.zeros_like(p.data) for p in params]
        with no_grad():
            out = model.forward(xs, s0)
            windows = [(a, prev, b, _final_state(out, lstm, a)) for a, prev, b in updates(len(xs), k1, k2, op)]
            for p, grad in zip(params, analytic):
                numeric = finite_differences(lambda: _surrogate(model, xs, targets, windows), p.data, eps)
                check_close(grad, numeric, f"{op} ({scheme}): gradient mismatch for "
                            f"{p.name or 'a parameter'} {tuple(p.shape)}", "truncated BPTT",
                            "finite differences of the truncated surrogate", atol, rtol, eps)
    finally:
        for p, (data, grad) in zip(params, saved):
            p.data, p.grad = data, grad
    return True


@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
class TruncationBias:
    """Full minus truncated BPTT gradient of one parameter, per copy step j (arrays aligned on steps)."""
    k: int                   # steps per segment (None for the other schemes)
    parameter: str
    steps: np.ndarray        # 1 … T
    full: np.ndarray         # (T, *P.shape): ∂L/∂P(j), full BPTT
    truncated: np.ndarray    # (T, *P.shape): what truncated BPTT puts on P(j)
    bias: np.ndarray         # full − truncated
    bias_norms: np.ndarray   # ‖bias[j]‖_F
    relative: float          # ‖Σ_j bias‖ / ‖Σ_j full‖: how much of ∂L/∂P truncation misses
    cosine: float            # cosine between the full and the truncated ∂L/∂P
    scheme: str = ""         # "segments of k = 3", "τ = 2 terms per loss", "TBPTT(k1 = 2, k2 = 4)"

    def report(self):
        """A short table: per step, ‖full‖, ‖truncated‖ and ‖full − truncated‖."""
        lines = [f"truncation bias of ∂L/∂{self.parameter}, {self.scheme}",
                 "   j   ‖full‖        ‖truncated‖   ‖full − truncated‖"]
        for j, f, tr, b in zip(self.steps, self.full, self.truncated, self.bias_norms):
            lines.append(f"  {j:2d}   {np.linalg.norm(f):.4e}    {np.linalg.norm(tr):.4e}    {b:.4e}")
        lines.append(f"  total: ‖bias‖/‖∂L/∂{self.parameter}‖ = {self.relative:.3g}, "
                     f"cos(full, truncated) = {self.cosine:.4f}")
        return "\n".join(lines)


def truncation_bias(output, k=None, P=None, *, tau=None, k1=None, k2=None):
    """Full minus truncated BPTT gradient of P (default the recurrent weight W / weight_hh), per copy
    step j, for one scheme: segments of k steps, tau terms per loss, or TBPTT(k1, k2). A TruncationBias
    whose .report() prints the table. Cost: one pass of `columns` (see contributions.py)."""
    from .jacobians import recurrent_weight
    rec = recording(output)
    name, twin_P = rec.parameter(recurrent_weight(rec) if P is None else P, "truncation_bias")
    T = rec.T
    mask = truncation_mask(T, k, tau=tau, k1=k1, k2=k2, op="truncation_bias")
    full, truncated = np.zeros((T,) + twin_P.shape), np.zeros((T,) + twin_P.shape)
    for j, terms in columns(rec, name, "truncation_bias"):
        keep = mask[j - 1:, j - 1].astype(np.float64)[None, :, None]  # rows t = j … T
        full[j - 1] = _dense([(u, d.sum(axis=1, keepdims=True)) for u, d in terms], twin_P.shape)[0]
        truncated[j - 1] = _dense([(u, (d * keep).sum(axis=1, keepdims=True)) for u, d in terms], twin_P.shape)[0]
    bias = full - truncated
    total_full, total_trunc = full.sum(axis=0).ravel(), truncated.sum(axis=0).ravel()
    norm_full, norm_trunc = np.linalg.norm(total_full), np.linalg.norm(total_trunc)
    nan = float("nan")
    cosine = float(total_full @ total_trunc / (norm_full * norm_trunc)) if norm_full and norm_trunc else nan
    relative = float(np.linalg.norm(bias.sum(axis=0)) / norm_full) if norm_full else nan
    bias_norms = np.sqrt((bias.reshape(T, -1) ** 2).sum(axis=1))
    scheme = (f"segments of k = {k} steps" if k is not None else f"τ = {tau} terms per loss" if tau is not None
              else f"TBPTT(k1 = {k1}, k2 = {k2})")
    return TruncationBias(k, name, np.arange(1, T + 1), full, truncated, bias, bias_norms, relative, cosine,
                          scheme)
