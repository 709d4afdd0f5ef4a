"""Optimizers and gradient clipping."""
import numpy as np


def clip_grad_norm(params, max_norm):
    """Scale the gradients of `params` in place so that their joint L2 norm is at most max_norm.
    Returns the norm before clipping (as torch.nn.utils.clip_grad_norm_)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * scale
    return total
