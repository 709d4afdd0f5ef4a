"""Optimizers (SGD, Adam — torch.optim's update rules, step for step) and gradient clipping.

Updates assign a new array to `p.data` rather than writing into it, so graphs and outputs recorded before
a step keep the values they were computed with (the per-step copies W(t) share W's array).
"""
import math
import numbers

import numpy as np


def clip_grad_norm(params, max_norm, error_if_nonfinite=False):
    """Scale the gradients of `params` in place so that their joint L2 norm is at most max_norm, as
    torch.nn.utils.clip_grad_norm_: every gradient is multiplied by min(1, max_norm / (norm + 1e-6)).
    Returns the norm before clipping.

    max_norm must be a finite number ≥ 0 (torch accepts nan and then silently stops clipping). A NaN or
    Inf total norm raises RuntimeError with error_if_nonfinite=True (nothing is changed); otherwise the
    gradients are scaled by it as torch does (a NaN norm makes every gradient NaN, an Inf one zeroes the
    finite entries).
    """
    params = list(params)  # any iterable, as torch's (a generator would be empty on the second pass)
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not 0 <= max_norm < math.inf:
        raise ValueError(f"clip_grad_norm: max_norm must be a finite number >= 0, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite norm is handled below, by name
        total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm: the total L2 norm of the gradients is {total}, so it cannot be "
                           "clipped (error_if_nonfinite=True; with False the gradients are scaled by it, "
                           "as torch does)")
    scale = max_norm / (total + 1e-6)
    if not scale >= 1.0:  # also NaN: torch's clamp(max=1) keeps a NaN scale
        with np.errstate(invalid="ignore"):  # inf · 0 = nan, as in torch
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad * scale
    return total


class Optimizer:
    """Holds the parameters; step() updates those with a gradient, zero_grad() clears every .grad."""

    def __init__(self, params, lr):
        if hasattr(params, "parameters"):
            params = params.parameters()
        self.params = list(dict.fromkeys(params))  # unique, in order
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not lr >= 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be ≥ 0, got {lr}")
        self.lr = lr
        self.state = [{} for _ in self.params]
        self.steps = 0

    def zero_grad(self):
        """Set every gradient to None (torch's zero_grad(set_to_none=True)): the next backward starts anew."""
        for p in self.params:
            p.grad = None

    def step(self):
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = np.asarray(p.grad, dtype=p.dtype)
            if g.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: {p.name or 'parameter'} {p.shape} has a "
                                 f"gradient of shape {g.shape}")
            p.data = self._update(p.data, g, state)

    def _update(self, w, g, state):
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: g ← ∇ + weight_decay·w; with momentum μ, buf ← μ·buf + g (buf = g at the first
    step); w ← w − lr·buf (w − lr·g without momentum)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be ≥ 0, got {momentum}, {weight_decay}")
        self.momentum, self.weight_decay = momentum, weight_decay

    def _update(self, w, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            buf = state.get("momentum_buffer")
            g = state["momentum_buffer"] = g.copy() if buf is None else self.momentum * buf + g
        return w - self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be > 0 (it keeps m / (√v + eps) finite), got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"Adam: weight_decay must be ≥ 0, got {weight_decay}")
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay

    def _update(self, w, g, state):
        beta1, beta2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * w
        t = state["step"] = state.get("step", 0) + 1  # per parameter, as torch (a parameter may miss steps)
        m, v = state.get("exp_avg", np.zeros_like(w)), state.get("exp_avg_sq", np.zeros_like(w))
        m = state["exp_avg"] = m + (1 - beta1) * (g - m)  # torch's lerp_: the same value, the same rounding
        v = state["exp_avg_sq"] = v * beta2 + (1 - beta2) * (g * g)
        bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
        denom = np.sqrt(v) / math.sqrt(bias2) + self.eps  # Python floats keep float32 arrays float32
        return w - (self.lr / bias1) * (m / denom)
