"""Truncated BPTT: split the sequence into segments of k steps, carry the state forward detached, and
backpropagate each segment on its own. The carried state is a constant of the next segment, so a loss
never reaches a copy W(j) of an earlier segment: the truncated gradient is the full BPTT double sum
with the contributions that cross a segment boundary left out.

`truncated_gradcheck` checks such gradients against finite differences of the truncated surrogate
(the segments' losses with each segment's start state frozen at its current value), and
`truncation_bias` reports what truncation leaves out, per step: full minus truncated gradient.
"""
from dataclasses import dataclass

import numpy as np

from ..gradcheck import check_close, finite_differences
from ..tensor import no_grad
from . import rerun as _rerun
from .contributions import contributions, step_grads


def _segments(T, k, op):
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{op}: k must be a positive integer (steps per segment), got {k!r}")
    return [(start, min(start + k, T)) for start in range(0, T, k)]


def _as_array(x):
    return np.asarray(getattr(x, "data", x))


def truncated_bptt(model, xs, targets, k, optimizer=None, *, s0=None):
    """Truncated BPTT over segments of k steps; returns the per-segment losses (list of floats).

    Parameters
    ----------
    model : nn.RNN
    xs, targets : inputs (T, B, n) or (T, n) and integer targets (T, B) or (T,), as for model.loss
    k : steps per segment (the last segment may be shorter); k ≥ T is full BPTT
    optimizer : object with .zero_grad() and .step(), or None. Given, each segment runs
        zero_grad(), backward, step() (so later segments see the updated weights). Without one,
        the segments' gradients accumulate in the parameters' .grad (nothing is zeroed first).
    s0 : initial state (default zeros)
    """
    xs, targets = _as_array(xs), _as_array(targets)
    losses = []
    state = s0
    for start, stop in _segments(len(xs), k, "truncated_bptt"):
        if optimizer is not None:
            optimizer.zero_grad()
        L, out = model.loss(xs[start:stop], targets[start:stop], state)
        L.backward()
        if optimizer is not None:
            optimizer.step()
        state = out.states[-1].detach()  # carried forward as a constant: backward stops here
        losses.append(L.item())
    return losses


def _segment_runs(output, P, k, op):
    """(start, stop, segment output, the twin's P) per segment: each segment rerun on a float64 twin from
    its recomputed start state, as truncated BPTT runs it."""
    name = _rerun.parameter_name(output, P, op)
    _rerun.check_targets(output, op)
    model, run = _rerun.rerun(output)
    xs = output.inputs.astype(np.float64)
    for start, stop in _segments(output.T, k, op):
        _, segment = model.loss(xs[start:stop], output.targets[start:stop], run.states[start].data)
        yield start, stop, segment, getattr(model, name)


def truncated_contributions(output, P, k):
    """C[t−1, j−1] = ∂L_t/∂P(j) under truncation to segments of k steps: the full `contributions`
    inside each diagonal block (segment), exactly zero across segments, so every entry with
    t − j ≥ k is zero. Sums over t give the per-step gradients truncated_bptt puts on the copies.
    """
    C = np.zeros((output.T, output.T) + P.shape)
    for start, stop, segment, twin_P in _segment_runs(output, P, k, "truncated_contributions"):
        C[start:stop, start:stop] = contributions(segment, twin_P)
    return C


def _truncated_loss(model, xs, targets, segments):
    """The surrogate Σ_segments L_segment with every segment starting from a frozen state."""
    total = 0.0
    for start, stop, s_start in segments:
        total += model.loss(xs[start:stop], targets[start:stop], s_start)[0].item()
    return total


def truncated_gradcheck(model, xs, targets, k, eps=1e-6, atol=1e-5, rtol=1e-3, *, s0=None):
    """Check truncated_bptt's gradients against central finite differences of the truncated surrogate.

    Truncated gradients are not derivatives of the loss, so an ordinary gradcheck fails on them
    (the peers' workaround is to switch truncation off). They are the exact derivatives of the
    surrogate Σ_segments L_segment(θ; s_start frozen), which this function differentiates numerically,
    in float64, element by element of every parameter. Parameters and their .grad are restored.

    Returns True, or raises GradcheckError naming the parameter, the element, both values and k.
    """
    xs = _as_array(xs).astype(np.float64)
    targets = _as_array(targets)
    params = model.parameters()
    saved = [(p.data, p.grad) for p in params]
    try:
        for p in params:
            p.data, p.grad = p.data.astype(np.float64), None
        truncated_bptt(model, xs, targets, k, s0=s0)
        analytic = [p.grad if p.grad is not None else np.zeros_like(p.data) for p in params]
        with no_grad():
            out = model.forward(xs, s0)
            segments = [(a, b, out.states[a].data) for a, b in _segments(len(xs), k, "truncated_gradcheck")]
            for p, grad in zip(params, analytic):
                numeric = finite_differences(lambda: _truncated_loss(model, xs, targets, segments), p.data, eps)
                check_close(grad, numeric, f"truncated_gradcheck (k = {k}): gradient mismatch for "
                            f"{p.name or 'a parameter'} {tuple(p.shape)}", "truncated BPTT",
                            "finite differences of the truncated surrogate", atol, rtol, eps)
    finally:
        for p, (data, grad) in zip(params, saved):
            p.data, p.grad = data, grad
    return True


@dataclass
class TruncationBias:
    """Full minus truncated BPTT gradient of one parameter, per copy step j (arrays aligned on steps)."""
    k: int
    parameter: str
    steps: np.ndarray        # 1 … T
    full: np.ndarray         # (T, *P.shape): ∂L/∂P(j), full BPTT
    truncated: np.ndarray    # (T, *P.shape): what truncated BPTT puts on P(j)
    bias: np.ndarray         # full − truncated
    bias_norms: np.ndarray   # ‖bias[j]‖_F
    relative: float          # ‖Σ_j bias‖ / ‖Σ_j full‖: how much of ∂L/∂P truncation misses
    cosine: float            # cosine between the full and the truncated ∂L/∂P

    def report(self):
        """A short table: per step, ‖full‖, ‖truncated‖ and ‖full − truncated‖."""
        lines = [f"truncation bias of ∂L/∂{self.parameter}, segments of k = {self.k} steps",
                 "   j   ‖full‖        ‖truncated‖   ‖full − truncated‖"]
        for j, f, tr, b in zip(self.steps, self.full, self.truncated, self.bias_norms):
            lines.append(f"  {j:2d}   {np.linalg.norm(f):.4e}    {np.linalg.norm(tr):.4e}    {b:.4e}")
        lines.append(f"  total: ‖bias‖/‖∂L/∂{self.parameter}‖ = {self.relative:.3g}, "
                     f"cos(full, truncated) = {self.cosine:.4f}")
        return "\n".join(lines)


def truncation_bias(output, k, P=None):
    """Full minus truncated (segments of k steps) BPTT gradient of P (default W), per copy step j:
    a TruncationBias whose .report() prints the table."""
    P = getattr(output.model, "W", None) if P is None else P
    name = _rerun.parameter_name(output, P, "truncation_bias")
    full = step_grads(output, P)
    truncated = np.zeros_like(full)
    for start, stop, segment, twin_P in _segment_runs(output, P, k, "truncation_bias"):
        truncated[start:stop] = step_grads(segment, twin_P)
    bias = full - truncated
    total_full, total_trunc = full.sum(axis=0).ravel(), truncated.sum(axis=0).ravel()
    norm_full, norm_trunc = np.linalg.norm(total_full), np.linalg.norm(total_trunc)
    nan = float("nan")
    cosine = float(total_full @ total_trunc / (norm_full * norm_trunc)) if norm_full and norm_trunc else nan
    relative = float(np.linalg.norm(bias.sum(axis=0)) / norm_full) if norm_full else nan
    bias_norms = np.sqrt((bias.reshape(output.T, -1) ** 2).sum(axis=1))
    steps = np.arange(1, output.T + 1)
    return TruncationBias(k, name, steps, full, truncated, bias, bias_norms, relative, cosine)
