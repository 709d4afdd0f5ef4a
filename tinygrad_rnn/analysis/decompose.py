"""The slide's expansion of the total derivative ∂s_t/∂W into explicit and implicit parts, term by term:

    ∂s_t/∂W = ∂⁺s_t/∂W + ∂s_t/∂s_{t−1} ∂⁺s_{t−1}/∂W + … = Σ_{k=1}^{t} ∂s_t/∂s_k · ∂⁺s_k/∂W

(k = t is the explicit part, every k < t an implicit path through s_k), checked against central finite
differences of s_t with respect to W (every other input held fixed, s_0 a constant).
"""
from dataclasses import dataclass

import numpy as np

from ..tensor import Tensor, no_grad
from .jacobians import explicit_grad, state_jacobian, step_arguments


@dataclass
class Decomposition:
    """terms[k−1] = ∂s_t/∂s_k · ∂⁺s_k/∂P for k = 1 … t, each (w, *P.shape), and their checks."""
    t: int
    parameter: str
    steps: np.ndarray          # 1 … t
    terms: np.ndarray          # (t, w, *P.shape)
    norms: np.ndarray          # ‖terms[k−1]‖_F
    total: np.ndarray          # Σ_k terms: the total derivative ∂s_t/∂P
    numeric: np.ndarray        # the same by central finite differences
    max_error: float           # max |total − numeric|
    convention: str = "row"

    def table(self):
        """The slide's sum as a table: one line per term, its norm and its share of Σ‖term‖."""
        t, P = self.t, self.parameter
        share = self.norms / self.norms.sum() if self.norms.sum() else np.zeros_like(self.norms)
        lines = [f"∂s_{t}/∂{P} = Σ_k ∂s_{t}/∂s_k · ∂⁺s_k/∂{P}  ({self.convention} convention)",
                 "   k   term                              part       ‖term‖_F     share"]
        for k, norm, frac in zip(self.steps, self.norms, share):
            part = "explicit" if k == t else "implicit"
            lines.append(f"  {k:2d}   ∂s_{t}/∂s_{k} · ∂⁺s_{k}/∂{P:<14} {part:9s}  {norm:.4e}   {frac:6.1%}")
        lines.append(f"  sum ‖Σ_k term‖_F = {np.linalg.norm(self.total):.4e}; finite differences agree to "
                     f"{self.max_error:.1e}")
        return "\n".join(lines)

    __str__ = table


def _state_at(rec, t, batch):
    """s_t of sequence `batch` as an array, rerun with the twin's current weights (no cache)."""
    s = Tensor(rec.state0[batch:batch + 1])
    with no_grad():
        for x in rec.inputs[:t, batch:batch + 1]:
            s = rec.pack(rec.cell(Tensor(x), rec.unpack(s)))
    return s.data[0]


def decompose(output, t, P=None, batch=0, convention="row", eps=1e-6):
    """Every term ∂s_t/∂s_k · ∂⁺s_k/∂P (k = 1 … t) with its norm, their sum, and the finite-difference
    check of that sum (default P: the recurrent weight W / weight_hh). Returns a Decomposition; print it
    (or .table()) for the slide's table. Cost: t state Jacobians and explicit tensors, plus 2·|P| reruns
    of t steps for the check (small models: it is a check)."""
    rec, b, name, twin_P = step_arguments(output, t, P, batch, convention, "decompose")
    terms = np.stack([np.tensordot(state_jacobian(rec, t, k, b), explicit_grad(rec, k, name, b), axes=1)
                      for k in range(1, t + 1)])
    total = terms.sum(axis=0)
    numeric = np.zeros_like(total)
    flat = twin_P.data.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        plus = _state_at(rec, t, b)
        flat[i] = keep - eps
        minus = _state_at(rec, t, b)
        flat[i] = keep
        numeric.reshape(len(numeric), -1)[:, i] = (plus - minus) / (2 * eps)
    error = float(np.abs(total - numeric).max())
    if convention == "column" and twin_P.ndim == 2:
        terms, total, numeric = (np.swapaxes(a, -1, -2) for a in (terms, total, numeric))
    norms = np.sqrt((terms.reshape(t, -1) ** 2).sum(axis=1))
    return Decomposition(int(t), name, np.arange(1, t + 1), terms, norms, total, numeric, error, convention)
