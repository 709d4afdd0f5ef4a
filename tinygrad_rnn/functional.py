"""Losses and helpers built on the ops, PyTorch-style (`import tinygrad_rnn.functional as F`)."""
import numpy as np

from . import ops
from .errors import ShapeError
from .tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def cross_entropy(logits, targets, reduction="mean"):
    """Softmax cross-entropy with integer class targets: logits (B, k) with targets (B,), or (k,) with one
    target. `reduction`: "mean" (default, as PyTorch), "sum" or "none". Backward: p − onehot(target)."""
    _check_reduction("cross_entropy", reduction)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be floating-point, got dtype {logits.dtype}")
    if logits.ndim not in (1, 2):
        raise ShapeError(f"cross_entropy: logits must have shape (B, k) or (k,), got {logits.shape}")
    expected = logits.shape[:1] if logits.ndim == 2 else ()
    if targets.shape != expected:
        raise ShapeError(f"cross_entropy: logits {logits.shape} need targets of shape {expected}, "
                         f"got {targets.shape}")
    check_class_targets("cross_entropy", targets, logits.shape[-1])
    return ops.cross_entropy(logits, targets, reduction)


def check_class_targets(op, targets, k):
    """Integer class indices in [0, k), or a clear error."""
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integer class indices, got dtype {targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= k):
        raise ValueError(f"{op}: targets must be in [0, {k}) for {k} classes, "
                         f"got values in [{targets.min()}, {targets.max()}]")


def binary_cross_entropy(probs, targets, reduction="mean"):
    """−[t log p + (1 − t) log(1 − p)] elementwise, for probabilities p in [0, 1] (e.g. after sigmoid)."""
    _check_reduction("binary_cross_entropy", reduction)
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets, dtype=probs.dtype)
    if t.shape != probs.shape:
        raise ShapeError(f"binary_cross_entropy: probs {probs.shape} and targets {t.shape} must have the same shape")
    if probs.dtype.kind != "f":
        raise TypeError(f"binary_cross_entropy: probs must be floating-point, got dtype {probs.dtype}")
    if probs.data.size and not (probs.data.min() >= 0 and probs.data.max() <= 1):  # NaN fails this too
        raise ValueError("binary_cross_entropy: probs must lie in [0, 1] (apply sigmoid first)")
    return ops.binary_cross_entropy(probs, t, reduction)


def one_hot(indices, num_classes, dtype=np.float32):
    """Tensor of shape indices.shape + (num_classes,) with a 1 at each index."""
    indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(f"one_hot: indices must be in [0, {num_classes}), got [{indices.min()}, {indices.max()}]")
    return Tensor(np.eye(num_classes, dtype=dtype)[indices])


softmax = ops.softmax
log_softmax = ops.log_softmax
tanh = ops.tanh
sigmoid = ops.sigmoid
relu = ops.relu
