"""Ops applied at every step at once: one numpy call for all T steps, one node per step in the graph.

The output side of an RNN, y_t = s_t V + c and L_t = CE(y_t, target_t), does not feed the recurrence, so
nothing forces it to run step by step. Here it runs as one GEMM and one softmax over all steps (what
hand-written and fused RNNs do), yet the graph still holds y(t) and L(t) at every step, each with its own
inputs s(t), V(t), c(t): drawings, step tags and per-step copies' gradients ∂L/∂V(t) are unchanged.
The members of one call share one backward, run once for all steps (autograd.StepBatch). The maths
is the ops' own: `lazy.plan` / `lazy.weight_grad` for the weight (as affine's), `ops.unbroadcast` for the
bias, `ops.softmax_cross_entropy` for the loss.
"""
import numpy as np

from . import lazy
from .lazy import transposed
from .ops import softmax_cross_entropy, unbroadcast
from .tensor import Op, shape_error, step_results

LINEAR = Op("linear", saves=("inputs",), pairs=True, batched=True)          # (x(t), weight(t)[, bias(t)])
CROSS_ENTROPY = Op("cross_entropy", saves=(), batched=True)  # (its backward uses arrays of its own)


def _stacked(gs, like):
    """The members' gradients as one array (T, ...), zeros where a member got none."""
    if all(g is not None for g in gs):
        return np.stack(gs)
    zeros = np.zeros(like.shape[1:], like.dtype)
    return np.stack([zeros if g is None else g for g in gs])


def linear_steps(tape, xs, weight, bias=None):
    """[x(t) @ weight(t) + bias(t) for x(t) in xs], each x(t) a node of step t of `tape`: one node per
    step, computed as one matmul over all steps. weight(t), bias(t) are the tape's copies (as inside
    tape.step(t)); every x(t) must have the same shape (B, d) or (d,)."""
    if not xs:
        return []
    steps = [x.step for x in xs]
    if any(t is None for t in steps):
        raise ValueError("linear_steps: every input must be a node recorded inside a step of the tape")
    first = xs[0]
    if weight.data.ndim != 2:
        raise shape_error("linear_steps", (weight,), "the weight must be a matrix (in, out)")
    if len({x.data.shape for x in xs}) != 1:
        raise shape_error("linear_steps", xs, "every step's input needs the same shape")
    weights = tape.at_steps(weight, steps)
    inputs = list(zip(xs, weights) if bias is None else zip(xs, weights, tape.at_steps(bias, steps)))
    w = weight.data
    try:
        Y = np.stack([x.data for x in xs]) @ w      # (T, B, k) or (T, k); the stacked copy is not kept
    except ValueError:
        raise shape_error("linear_steps", (first, weight), "inner dimensions differ") from None
    if bias is not None:
        Y += bias.data
    # each step's rows for ∂L/∂weight(t) = x(t)ᵀ g(t), formed as affine forms it (lazy.plan: as factors,
    # a leaf's rows snapshotted)
    rows = [x.data.reshape(-1, x.data.shape[-1]) for x in xs]
    hows = [lazy.plan(x, w_t) for x, w_t in zip(xs, weights)]
    bias_shape = None if bias is None else bias.data.shape

    def backward(gs):
        gY = _stacked(gs, Y)
        gX = gY @ transposed(w)                        # every step's ∂L/∂x(t) in one GEMM
        g_rows = gY.reshape(len(rows), -1, gY.shape[-1])
        if bias_shape is not None:
            g_bias = g_rows.sum(axis=1) if bias_shape == gY.shape[-1:] else None
        out = []
        for t, g in enumerate(gs):
            if g is None:
                out.append(None)
                continue
            grads = (gX[t], lazy.weight_grad(rows[t], g_rows[t], hows[t]))
            if bias_shape is not None:
                grads += (g_bias[t] if g_bias is not None else unbroadcast(gY[t], bias_shape),)
            out.append(grads)
        return out
    return step_results(list(Y), LINEAR, inputs, steps, backward)


def cross_entropy_steps(logits, targets):
    """[Σ_batch cross_entropy(y(t), targets[t]) for y(t) in logits]: one node per step, one softmax over
    all steps. logits: nodes of shape (B, k) or (k,); targets: integers (T, B) or (T,), already checked
    (F.check_class_targets). Backward: the notes' p − onehot(target) for every step at once."""
    if not logits:
        return []
    Z = np.stack([y.data for y in logits])          # (T, B, k) or (T, k)
    T, shape = Z.shape[0], Z.shape
    Z2 = Z.reshape(-1, Z.shape[-1])
    targets = np.array(targets).reshape(-1)          # our own copy: the caller may refill its buffer
    row_losses, p_minus_onehot = softmax_cross_entropy(Z2, targets, np.arange(Z2.shape[0]))
    losses = row_losses.reshape(T, -1).sum(axis=1).astype(Z.dtype, copy=False)

    def backward(gs):
        dZ = p_minus_onehot()
        scale = np.array([0 if g is None else g for g in gs], dtype=dZ.dtype)
        dZ = (dZ.reshape(T, -1, shape[-1]) * scale[:, None, None]).reshape(shape)
        return [None if g is None else (dZ[t],) for t, g in enumerate(gs)]
    return step_results([losses[t, ...] for t in range(T)], CROSS_ENTROPY, [(y,) for y in logits],
                        [y.step for y in logits], backward)
