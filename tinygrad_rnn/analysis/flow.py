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
from .local import backwards, local_jacobians
from .recording import recording

VANISHING_BELOW = 0.9
EXPLODING_ABOVE = 1.1


@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
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


def _row_norms(step_back, t, rec, part, chunk=128):
    """‖∂s_t/∂s_k‖₂ for k = t … 0 (returned in order k = 0 … t): ∂s_t/∂s_{k−1} = ∂s_t/∂s_k · D_k, with
    `step_back` yielding D_t, D_{t−1}, …, D_1 (w'×w' each, the part's chain).

    The product is kept as e^scale · J with J rescaled whenever its entries leave [1e-100, 1e100], so a
    vanishing (or exploding) product keeps its digits instead of underflowing. Widths up to EXACT_WIDTH:
    the norms by batched eigenvalue problems, `chunk` matrices at a time (memory O(chunk · w²) beside D);
    wider: a warm-started Lanczos iteration (see _TopSingular), O(w²) per step instead of O(w³)."""
    out = np.empty(t + 1)
    step_back = iter(step_back)
    J, scale = None, 0.0
    top = None
    pending, first = [], t
    for k in range(t, -1, -1):
        if J is None:
            J = np.eye(rec.width if part != "carousel" else rec.hidden_size)
            top = None if _block(J, rec, part).shape[-1] <= EXACT_WIDTH else _TopSingular()
        else:
            J = J @ next(step_back)
            size = np.abs(J).max()
            if size > 0 and not 1e-100 <= size <= 1e100:
                J, scale = J / size, scale + np.log(size)
        M = J if part in ("state", "carousel") else _block(J, rec, part)
        if top is not None:
            out[k] = top.norm(M, t - k) * np.exp(scale)
            continue
        pending.append((M, scale))
        if len(pending) == chunk or k == 0:
            norms = _spectral_norms(np.stack([m for m, _ in pending]))
            out[k:first + 1] = (norms * np.exp([e for _, e in pending]))[::-1]
            pending, first = [], k - 1
    return out


FULL_UP_TO = 200  # gradient_flow measures every end step t up to this T, else only t = T (see ends)
EXACT_WIDTH = 64  # wider Jacobians: spectral norms by the warm-started Lanczos iteration (_TopSingular)


class _TopSingular:
    """‖M‖₂ for the successive products M = ∂s_t/∂s_k of one row (k = t, t−1, …), each from the last.

    Their top left singular vectors (in s_t's space) change little from one k to the next, so the last
    one starts a Lanczos iteration on M Mᵀ (fully reorthogonalised), stopped when the top Ritz pair's
    residual is below TOLERANCE (relative): a few O(w²) products per step instead of an O(w³)
    eigenproblem. The first EXACT_GAPS gaps (where singular values still cross), every CHECK_EVERY-th
    gap and any step that does not converge in MAX_STEPS are computed exactly (a symmetric
    eigenproblem), which also re-seeds the start vector."""
    TOLERANCE, MAX_STEPS, EXACT_GAPS, CHECK_EVERY = 1e-12, 40, 16, 64

    def __init__(self):
        self.u = None

    def norm(self, M, gap):
        if self.u is None or gap <= self.EXACT_GAPS or gap % self.CHECK_EVERY == 0:
            return self._exact(M)
        Q = np.empty((M.shape[0], min(self.MAX_STEPS, M.shape[0])))
        alphas, betas = [], []
        q = self.u
        for j in range(Q.shape[1]):
            Q[:, j] = q
            z = M @ (M.T @ q)
            alphas.append(q @ z)
            basis = Q[:, :j + 1]
            for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
                z -= basis @ (basis.T @ z)
            beta = np.linalg.norm(z)
            theta, S = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
            if theta[-1] <= 0:
                break
            if beta <= self.TOLERANCE * theta[-1] / max(abs(S[-1, -1]), 1e-300):
                u = basis @ S[:, -1]
                self.u = u / np.linalg.norm(u)
                return float(np.sqrt(theta[-1]))
            betas.append(beta)
            q = z / beta
        return self._exact(M)

    def _exact(self, M):
        values, vectors = np.linalg.eigh(M @ M.T)
        self.u = vectors[:, -1]
        return float(np.sqrt(max(values[-1], 0.0)))


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
    from each end: ∂s_t/∂s_{k−1} = ∂s_t/∂s_k · D_k (rescaled as it shrinks, so norms far below 1e-154
    keep their digits). Cost: the step Jacobians (one or two backward passes over T rows for the cells of
    nn/cells.py, see local.py), then per end step t products of w×w matrices, O(t·w³), and t spectral
    norms — batched eigenproblems for w ≤ EXACT_WIDTH = 64, else a warm-started Lanczos iteration of
    O(w²) per step (exact every 64th gap). At T = 1000, d = 128 (one BLAS thread, 2 shared vCPUs at
    load 1.6): 0.55 s for the vanilla cell, 1.9 s for the LSTM (w = 256), peak RSS 156 / 347 MB
    (benchmarks/bench_analysis.py). Memory: with one end step the step Jacobians stream from the end,
    256 steps (256·w² floats) at a time; several end steps hold all T·w².
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
    norms = np.full((T + 1, T + 1), np.nan)
    norms[0, 0] = 1.0
    if len(ends) == 1:  # one row: the step Jacobians streamed from the end, a chunk at a time
        t = int(ends[0])
        norms[t, :t + 1] = _row_norms((_chain(local.D[i, b], part, rec)
                                       for _, i, local in backwards(rec, t, op="gradient_flow")), t, rec, part)
    else:
        D = _chain(local_jacobians(rec, np.arange(1, ends.max() + 1), op="gradient_flow").D[:, b], part, rec)
        for t in ends:
            norms[t, :t + 1] = _row_norms((D[k - 1] for k in range(t, 0, -1)), t, rec, part)
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
