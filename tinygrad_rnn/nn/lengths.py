"""Variable-length batches: sequences of different lengths padded to one (T, B, ...) array.

What the models do with `lengths` (B,) — torch's pack_padded_sequence semantics, written as masks:
- only steps 1 … max(lengths) run (later columns are pure padding and are never recorded);
- at step t the cell runs on every row, but a sequence that has ended (t > its length) keeps its
  state: s(t) = where(alive(t), cell(x(t), s(t−1)), s(t−1)), so after the last step every row holds
  its own final state (torch's h_n) and no gradient reaches a padded step's computation;
- losses count the real steps only (padded targets are ignored).

What a copy W(t) means then: one copy per recorded step, shared by the sequences still running at t
(torch's batch_sizes[t−1] rows of a packed batch). ∂L/∂W(t) is the sum of those sequences' own
∂L/∂W(t); the padded rows add exact zeros. So a sequence run alone has one copy per real step, and a
batch has max(lengths) copies, the step-t copy carrying the gradient of the sequences alive at t. (The
alternative, shrinking the batch to the live rows at every step, gives the same numbers but changes
every node's shape from step to step; masks keep the output side one GEMM and the states stackable.)
Steps where every sequence is alive (t ≤ min(lengths)) add no node at all.
"""
import numpy as np

from ..ops import where

IGNORE = -100  # torch's ignore_index: the target of a padded step


def checked_lengths(op, lengths, T, B):
    """lengths as an int64 array (B,) with 1 ≤ length ≤ T, or a clear error (torch refuses length 0 too)."""
    array = np.asarray(lengths.data if hasattr(lengths, "data") else lengths)
    if array.dtype.kind not in "iu" or array.shape != (B,):
        raise ValueError(f"{op}: lengths must be {B} integers (one per sequence of the batch), "
                         f"got {array.dtype} of shape {array.shape}")
    if B and (array.min() < 1 or array.max() > T):
        raise ValueError(f"{op}: lengths must lie in [1, {T}] (the padded length T = {T}), "
                         f"got values in [{array.min()}, {array.max()}]")
    return array.astype(np.int64)


def alive_masks(lengths):
    """[None or mask (B, 1) for t = 1 … max(lengths)]: True where sequence b is still running at step t;
    None where every sequence is (those steps need no masking)."""
    steps = np.arange(1, int(lengths.max()) + 1)
    alive = steps[:, None] <= lengths[None, :]
    return [None if row.all() else row[:, None] for row in alive]


def keep_ended(new, old, alive):
    """The state after a step: `new` for the sequences alive at it, `old` (their final state) for those
    that ended; an LSTM's (h, c) pair masked part by part."""
    if alive is None:
        return new
    if isinstance(new, tuple):
        return tuple(where(alive, n, o) for n, o in zip(new, old))
    return where(alive, new, old)


def zero_padding(values, lengths):
    """values (T, B, ...) with every padded step set to 0 (a copy): padding never reaches a cell, so NaN or
    huge filler values cannot leak into a gradient (0 × NaN is NaN)."""
    values = np.array(values)
    padded = np.arange(1, len(values) + 1)[:, None] > lengths[None, :]
    values[padded] = 0
    return values


def masked_targets(targets, lengths):
    """Integer targets (T, B) with IGNORE at every padded step (a copy)."""
    targets = np.array(targets)
    targets[np.arange(1, len(targets) + 1)[:, None] > lengths[None, :]] = IGNORE
    return targets
