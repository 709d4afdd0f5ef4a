"""Losses and helpers built on the ops, PyTorch-style (`import tinygrad_rnn.functional as F`)."""
import builtins

import numpy as np

from . import ops
from .errors import ShapeError
from .ops import (gelu, leaky_relu, log_softmax, logsigmoid, logsumexp, pad, relu, sigmoid,  # noqa: F401
                  silu, softmax, softplus, tanh, where)  # (the activations, as torch.nn.functional has them)
from .tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def cross_entropy(logits, targets, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Softmax cross-entropy, torch.nn.functional.cross_entropy's layout: logits (B, k) with targets (B,),
    (k,) with one target, or (N, k, d₁, …) with targets (N, d₁, …) — classes on axis 1, so (T, B, k)
    logits of a sequence model go in as logits.permute(1, 2, 0) with targets (B, T), or reshaped to (T·B, k).
    targets: integer classes (rows equal to ignore_index count for nothing; "mean" averages the others), or
    class probabilities of the logits' shape. label_smoothing ε mixes ε/k into every target.
    `reduction`: "mean" (default, as PyTorch), "sum" or "none". Backward: p − onehot(target)."""
    _check_reduction("cross_entropy", reduction)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be floating-point, got dtype {logits.dtype}")
    if logits.ndim == 0:
        raise ShapeError("cross_entropy: logits must have shape (B, k), (k,) or (N, k, d1, ...), got ()")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    class_last = logits if logits.ndim <= 2 else logits.permute(0, *range(2, logits.ndim), 1)
    k = logits.shape[-1] if logits.ndim == 1 else logits.shape[1]
    if targets.dtype.kind == "f" and targets.shape == logits.shape:  # class probabilities
        q = targets if logits.ndim <= 2 else np.moveaxis(targets, 1, -1)
        q = q * (1 - label_smoothing) + label_smoothing / k
        return ops.distribution_cross_entropy(class_last, q, builtins.max(q.size // builtins.max(k, 1), 1), reduction)
    expected = logits.shape[:1] + logits.shape[2:] if logits.ndim >= 2 else ()
    if targets.shape != expected:
        raise ShapeError(f"cross_entropy: logits {logits.shape} need targets of shape {expected}, "
                         f"got {targets.shape}")
    ignored = targets == ignore_index if targets.dtype.kind in "iu" else np.zeros(targets.shape, bool)
    any_ignored = ignored.any()
    check_class_targets("cross_entropy", targets[~ignored] if any_ignored else targets, k)
    if not any_ignored and not label_smoothing and logits.ndim <= 2:
        return ops.cross_entropy(logits, targets, reduction)  # the notes' rule, on the training path
    q = np.zeros(class_last.shape, class_last.dtype)
    if q.size:
        np.put_along_axis(q, np.where(ignored, 0, targets)[..., None], 1 - label_smoothing, axis=-1)
        q += label_smoothing / k
        q[ignored] = 0
    return ops.distribution_cross_entropy(class_last, q, (~ignored).sum(), reduction)


def sequence_cross_entropy(logits, targets, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy over a sequence model's logits as an RNN user holds them: (T, B, k) — or the list of
    per-step (B, k) logits — with targets (T, B), classes on the LAST axis. torch.nn.functional.cross_entropy
    wants classes on axis 1, (N, k, d₁, …), and would read (T, B, k) as B classes; this is
    cross_entropy(logits.reshape(T·B, k), targets.reshape(T·B)), i.e. torch's
    F.cross_entropy(logits.permute(1, 2, 0), targets.T). ignore_index (e.g. padded steps), reduction and
    label_smoothing as there ("mean" averages over the steps kept)."""
    if isinstance(logits, (list, tuple)):
        logits = ops.stack(logits)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if logits.ndim < 2 or targets.shape != logits.shape[:-1]:
        raise ShapeError(f"sequence_cross_entropy: logits (T, B, k) need targets (T, B) — the logits' shape "
                         f"without the class axis {logits.shape[:-1]} — got logits {logits.shape} and targets "
                         f"{targets.shape}")
    flat = logits.reshape(-1, logits.shape[-1])
    out = cross_entropy(flat, targets.reshape(-1), reduction, ignore_index, label_smoothing)
    return out.reshape(targets.shape) if reduction == "none" else out


def nll_loss(log_probs, targets, reduction="mean", ignore_index=-100):
    """−log_probs[target] (log-probabilities, e.g. after log_softmax), torch's layout as in cross_entropy;
    rows whose target is ignore_index count for nothing."""
    _check_reduction("nll_loss", reduction)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if log_probs.ndim == 0:
        raise ShapeError("nll_loss: log_probs must have shape (B, k), (k,) or (N, k, d1, ...), got ()")
    expected = log_probs.shape[:1] + log_probs.shape[2:] if log_probs.ndim >= 2 else ()
    if targets.shape != expected:
        raise ShapeError(f"nll_loss: log_probs {log_probs.shape} need targets of shape {expected}, got {targets.shape}")
    k = log_probs.shape[-1] if log_probs.ndim == 1 else log_probs.shape[1]
    check_class_targets("nll_loss", targets[targets != ignore_index] if targets.dtype.kind in "iu" else targets, k)
    class_last = log_probs if log_probs.ndim <= 2 else log_probs.permute(0, *range(2, log_probs.ndim), 1)
    return ops.nll_loss(class_last, targets, ignore_index, reduction)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean", pos_weight=None, weight=None):
    """binary_cross_entropy(sigmoid(logits), targets) computed stably from the logits (torch's);
    pos_weight weighs the positive term (broadcast over the last axis, one weight per class), weight
    each element's loss (broadcast to the logits; 0 drops an element, e.g. a padded step's)."""
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if t.shape != logits.shape:
        raise ShapeError(f"binary_cross_entropy_with_logits: logits {logits.shape} and targets {t.shape} "
                         "must have the same shape")
    if weight is not None:
        weight = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
        try:
            fits = np.broadcast_shapes(weight.shape, logits.shape) == logits.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"binary_cross_entropy_with_logits: weight {weight.shape} must broadcast to the "
                             f"logits {logits.shape}")
    return ops.binary_cross_entropy_with_logits(logits, t, reduction, pos_weight, weight)


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


def one_hot(indices, num_classes=-1, dtype=np.int64):
    """Tensor of shape indices.shape + (num_classes,) with a 1 at each index: int64 as torch's (it promotes
    to the float dtype of whatever it multiplies); num_classes=-1 means max(indices) + 1, as torch."""
    indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {indices.dtype}")
    if num_classes == -1:
        num_classes = int(indices.max()) + 1 if indices.size else 0
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(f"one_hot: indices must be in [0, {num_classes}), got [{indices.min()}, {indices.max()}]")
    return Tensor(np.eye(num_classes, dtype=dtype)[indices])
