"""Vanishing or exploding? How fast ‖∂s_t/∂s_k‖ changes with the gap t − k, against the notes' bound.

    ∂s_t/∂s_k = Π_{j=k+1..t} diag(σ'(a_j)) Wᵀ,   so   ‖∂s_t/∂s_k‖₂ ≤ (γλ)^{t−k}

with γ = max σ' (1 for tanh, 1/4 for the logistic) and λ = ‖W‖₂ (vanilla cell). Gated cells have no
such bound (their step Jacobians are not a diagonal times one matrix): `bound` is NaN for them, and for
the LSTM the flow can be measured on the whole state (h, c), on h or c, or on the c → c carousel.
"""
from dataclasses import dataclass

import numpy as np

from .contributions import loss_state_gradients
from .jacobians import _block, _chain, _check_part
from .local import local_jacobians
from .recording import recording

VANISHING_BELOW = 0.9
EXPLODING_ABOVE = 1.1


@dataclass
class GradientFlow:
    """Aligned arrays over the gaps t − k = 1 … T−1, plus the fitted rate and the verdict."""
    gaps: np.ndarray            # 1 … T−1
    jacobian_norms: np.ndarray  # max over the measured t of ‖∂s_t/∂s_{t−gap}‖₂ (1 ≤ k < t ≤ T)
    bound: np.ndarray           # (γλ)^gap (NaN for gated cells: no such bound)
    rate: float                 # fitted per-step factor r: norms ≈ C·r^gap
    verdict: str                # "vanishing" (r < 0.9), "exploding" (r > 1.1) or "stable"
    gamma: float                # max σ' (NaN for gated cells)
    lam: float                  # ‖W‖₂ (‖weight_hh‖₂ for gated cells, for reference)
    norms: np.ndarray           # (T+1, T+1): ‖∂s_t/∂s_k‖₂ for k ≤ t at the measured t, NaN elsewhere
    nonlinearity: str           # "tanh"/"sigmoid", or the cell ("gru", "lstm")
    ends: np.ndarray = None     # the end steps t whose rows were measured
    part: str = "state"         # which state: "state", "h", "c" or "carousel"
    label: str = ""             # the model, for titles

    def summary(self):
        """A few lines for a terminal."""
        far = self.jacobian_norms[-1] if len(self.gaps) else float("nan")
        if np.isfinite(self.gamma):
            head = (f"‖W‖₂ = λ = {self.lam:.4g}, γ = max σ' = {self.gamma:g} ({self.nonlinearity}), "
                    f"γλ = {self.gamma * self.lam:.4g}\n")
        else:
            measured = {"state": "the whole state", "h": "h", "c": "c", "carousel": "the c → c carousel"}
            head = (f"{self.label}: ‖weight_hh‖₂ = {self.lam:.4g} (no (γλ)^gap bound for a gated cell), "
                    f"measured on {measured.get(self.part, self.part)}\n")
        return (head +
                f"max_t ‖∂s_t/∂s_k‖₂ over gaps 1..{len(self.gaps)}: "
                f"{self.jacobian_norms[0]:.3g} … {far:.3g}\n"
                f"fitted rate {self.rate:.4g} per step → {self.verdict} "
                f"(vanishing below {VANISHING_BELOW}, exploding above {EXPLODING_ABOVE})")


def fit_rate(gaps, norms):
    """The geometric factor r of norms ≈ C·r^gap: exp of the least-squares slope of log(norm) against
    the gap (with an intercept, so a first step unlike the rest does not bias r). One gap: r = norm^(1/gap).
    Norms that underflowed to 0 count as the smallest positive float."""
    gaps = np.asarray(gaps, dtype=np.float64)
    logs = np.log(np.maximum(np.asarray(norms, dtype=np.float64), np.finfo(np.float64).tiny))
    if len(gaps) == 0:
        return float("nan")
    if len(gaps) == 1:
        return float(np.exp(logs[0] / gaps[0]))
    slope = np.polyfit(gaps, logs, 1)[0]
    return float(np.exp(slope))


def verdict_for(rate):
    """The rule: "vanishing" if rate < 0.9, "exploding" if rate > 1.1, else "stable"."""
    if not np.isfinite(rate):
        return "stable" if np.isnan(rate) else "exploding"
    return "vanishing" if rate < VANISHING_BELOW else "exploding" if rate > EXPLODING_ABOVE else "stable"


def _row_norms(D, t, rec, part, chunk=128):
    """‖∂s_t/∂s_k‖₂ for k = t … 0 (returned in order k = 0 … t): ∂s_t/∂s_{k−1} = ∂s_t/∂s_k · D_k, the
    norms taken `chunk` matrices at a time (memory O(chunk · w²) beside D)."""
    out = np.empty(t + 1)
    J = np.eye(D.shape[-1])
    pending, first = [], t
    for k in range(t, -1, -1):
        if k < t:
            J = J @ D[k]
        pending.append(J if part in ("state", "carousel") else _block(J, rec, part))
        if len(pending) == chunk or k == 0:
            out[k:first + 1] = _spectral_norms(np.stack(pending))[::-1]
            pending, first = [], k - 1
    return out


FULL_UP_TO = 200  # gradient_flow measures every end step t up to this T, else only t = T (see ends)


def _spectral_norms(J):
    """Largest singular value of each matrix of J (…, m, m), batched: √ of the largest eigenvalue of JᵀJ
    (half the time of an SVD; the largest eigenvalue is accurate relative to itself)."""
    if not J.size:
        return np.zeros(J.shape[:-2])
    return np.sqrt(np.maximum(np.linalg.eigvalsh(np.swapaxes(J, -1, -2) @ J)[..., -1], 0.0))


def gradient_flow(output, batch=0, ends=None, part="state"):
    """Measure ‖∂s_t/∂s_k‖₂ for 1 ≤ k < t ≤ T of sequence `batch` and judge the gradient flow.

    Returns a GradientFlow: `.gaps` 1 … T−1, `.jacobian_norms` (per gap, the largest spectral norm over
    the measured end steps t), `.bound` (γλ)^gap, `.rate` (exp of the least-squares slope of log norm vs
    gap: the per-step factor by which the worst-case backpropagated gradient shrinks or grows) and
    `.verdict` by the rule rate < 0.9 → "vanishing", rate > 1.1 → "exploding", else "stable".

    ends: the end steps t whose whole row k = 0 … t is measured; default every t when T ≤ 200, else
    only t = T (one row already holds every gap). part: for an LSTM "state" ([h | c]), "h", "c" or
    "carousel" (Π diag(f_j), the c → c path alone).

    The Jacobians come from the engine (step Jacobians of a float64 rerun, local.py), chained backwards
    from each end: ∂s_t/∂s_{k−1} = ∂s_t/∂s_k · D_k. Cost: the step Jacobians (O(T·w) cell rows), then per
    end step t products and t symmetric eigenvalue problems of w×w matrices — O(|ends|·T·w³); at
    T = 1000, d = 128: 3.2 s for the vanilla cell, 5.7 s GRU, 20 s LSTM (w = 256) on a busy 2-vCPU
    machine (benchmarks/bench_analysis.py). Memory: T·w² floats for the step Jacobians (the norms are
    taken 128 at a time).
    """
    rec = recording(output)
    b = rec.sequence(batch, "gradient_flow")
    _check_part(rec, part, "gradient_flow")
    T = rec.T
    if T < 2:
        raise ValueError(f"gradient_flow: needs at least 2 steps (a gap t − k ≥ 1), got T = {T}")
    if ends is None:
        ends = np.arange(1, T + 1) if T <= FULL_UP_TO else np.array([T])
    ends = np.unique(np.asarray(ends, dtype=np.int64))
    if ends.size == 0 or ends.min() < 1 or ends.max() > T:
        raise ValueError(f"gradient_flow: ends must be steps in 1 … T = {T}, got {ends.tolist()}")
    D = _chain(local_jacobians(rec, np.arange(1, ends.max() + 1), op="gradient_flow").D[:, b], part, rec)
    norms = np.full((T + 1, T + 1), np.nan)
    norms[0, 0] = 1.0
    for t in ends:
        norms[t, :t + 1] = _row_norms(D, t, rec, part)
    gaps = np.arange(1, T)
    per_gap = np.full(len(gaps), np.nan)
    for t in ends:
        g = t - np.arange(1, t)               # gaps of the entries k = 1 … t−1
        np.fmax.at(per_gap, g - 1, norms[t, 1:t])
    measured = np.isfinite(per_gap)
    gaps, per_gap = gaps[measured], per_gap[measured]
    W = getattr(rec.cell, "W", None)
    if W is not None:
        gamma = 1.0 if rec.cell.nonlinearity == "tanh" else 0.25
        lam = float(np.linalg.norm(W.data, 2))
        bound = (gamma * lam) ** gaps.astype(np.float64)
        kind = rec.cell.nonlinearity
    else:
        gamma, lam = float("nan"), float(np.linalg.norm(rec.cell.weight_hh.data, 2))
        bound, kind = np.full(len(gaps), np.nan), rec.cell_type
    rate = fit_rate(gaps, per_gap)
    return GradientFlow(gaps, per_gap, bound, rate, verdict_for(rate), gamma, lam, norms, kind, ends, part,
                        rec.label)


def gradient_vs_gap(output, part="h"):
    """(gaps, norms): ‖∂L_T/∂h_k‖ against the gap T − k for k = T … 1 (the last step's loss; for a
    many-to-one model the whole loss), the mean over the batch of each sequence's norm. part="state"
    uses the whole state ([h | c] for an LSTM). One backward of the loss and T products (B × w)(w × w)."""
    rec = recording(output)
    if part not in ("h", "state"):
        raise ValueError(f"gradient_vs_gap: part must be 'h' or 'state', got {part!r}")
    g = loss_state_gradients(rec)[1:]                     # k = 1 … T
    if part == "h":
        g = g[..., :rec.hidden_size]
    norms = np.linalg.norm(g, axis=-1).mean(axis=1)
    gaps = rec.T - np.arange(1, rec.T + 1)
    return gaps[::-1], norms[::-1]
