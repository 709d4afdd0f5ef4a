"""Vanishing or exploding? How fast ‖∂s_t/∂s_k‖ changes with the gap t − k, against the notes' bound.

    ∂s_t/∂s_k = Π_{j=k+1..t} diag(σ'(a_j)) Wᵀ,   so   ‖∂s_t/∂s_k‖₂ ≤ (γλ)^{t−k}

with γ = max σ' (1 for tanh, 1/4 for the logistic) and λ = ‖W‖₂.
"""
from dataclasses import dataclass

import numpy as np

from . import rerun as _rerun
from .jacobians import state_jacobian_rows

VANISHING_BELOW = 0.9
EXPLODING_ABOVE = 1.1


@dataclass
class GradientFlow:
    """Aligned arrays over the gaps t − k = 1 … T−1, plus the fitted rate and the verdict."""
    gaps: np.ndarray            # 1 … T−1
    jacobian_norms: np.ndarray  # max over t of ‖∂s_t/∂s_{t−gap}‖₂ (1 ≤ k < t ≤ T)
    bound: np.ndarray           # (γλ)^gap
    rate: float                 # fitted per-step factor r: norms ≈ C·r^gap
    verdict: str                # "vanishing" (r < 0.9), "exploding" (r > 1.1) or "stable"
    gamma: float                # max σ'
    lam: float                  # ‖W‖₂
    norms: np.ndarray           # (T+1, T+1): ‖∂s_t/∂s_k‖₂ for k ≤ t (rows t, columns k), else 0
    nonlinearity: str

    def summary(self):
        """A few lines for a terminal."""
        far = self.jacobian_norms[-1] if len(self.gaps) else float("nan")
        return (f"‖W‖₂ = λ = {self.lam:.4g}, γ = max σ' = {self.gamma:g} ({self.nonlinearity}), "
                f"γλ = {self.gamma * self.lam:.4g}\n"
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


def gradient_flow(output, batch=0):
    """Measure ‖∂s_t/∂s_k‖₂ for every 1 ≤ k < t ≤ T of sequence `batch` and judge the gradient flow.

    Returns a GradientFlow: `.gaps` 1 … T−1, `.jacobian_norms` (per gap, the largest spectral norm over
    t), `.bound` (γλ)^gap, `.rate` (exp of the least-squares slope of log norm vs gap: the per-step
    factor by which the worst-case backpropagated gradient shrinks or grows) and `.verdict` by the
    rule rate < 0.9 → "vanishing", rate > 1.1 → "exploding", else "stable". The Jacobians come from
    the engine (reverse mode on a float64 rerun), not from the formula. Cost: T backward passes and
    T²/2 SVDs of d×d matrices (about a second at T = 100, d = 64).
    """
    model = _rerun.twin(output)
    T = output.T
    if T < 2:
        raise ValueError(f"gradient_flow: needs at least 2 steps (a gap t − k ≥ 1), got T = {T}")
    norms = np.zeros((T + 1, T + 1))
    norms[0, 0] = 1.0
    for t, rows in state_jacobian_rows(output, batch):
        norms[t, :t + 1] = np.linalg.norm(rows, 2, axis=(1, 2))  # largest singular values
    gaps = np.arange(1, T)
    per_gap = np.array([max(norms[k + g, k] for k in range(1, T - g + 1)) for g in gaps])
    _, gamma = _rerun.derivative(model, np.zeros(1))
    lam = float(np.linalg.norm(model.W.data, 2))
    rate = fit_rate(gaps, per_gap)
    return GradientFlow(gaps, per_gap, (gamma * lam) ** gaps.astype(np.float64), rate, verdict_for(rate),
                        gamma, lam, norms, model.nonlinearity)
