"""detect_anomaly(): find the first op, step and source line where a NaN or Inf appears.

Inf counts too (PyTorch's anomaly mode checks NaN only), so the `logits + mask` idiom with -inf
entries trips it: mask with a large finite negative number inside this context.

Inside the context every recorded node remembers the user's line that created it (the first frame
outside tinygrad_rnn), every forward value is checked as it is made, and every gradient as the
backward sweep makes it. Slow (a stack walk per op): a debugging mode, as in PyTorch.
"""
import os
import traceback
import weakref

import numpy as np

from . import lazy, recording
from .errors import AnomalyError
from .recording import at_step, label

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_frame():
    for frame in reversed(traceback.extract_stack()[:-3]):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR + os.sep):
            return f"{frame.filename}:{frame.lineno}: {frame.line}"
    return "<unknown>"


class detect_anomaly:
    """Context manager: raise AnomalyError at the first NaN/Inf in a forward value or a gradient.
    Per thread, like grad mode: it checks what the thread that entered it computes."""

    def __init__(self):
        # id(node) -> the user's source line that made it, dropped with the node (a WeakKeyDictionary would
        # compare tensors with ==, which is elementwise)
        self.origins = {}

    def __enter__(self):
        self._state = state = recording.own()
        self._previous, state.anomaly = state.anomaly, self
        return self

    def __exit__(self, *exc):
        self._state.anomaly = self._previous
        return False

    def where(self, node):
        return self.origins.get(id(node), "<created outside detect_anomaly()>")

    def forward(self, out, op, inputs):
        origin = self.origins[id(out)] = _user_frame()
        weakref.finalize(out, self.origins.pop, id(out), None)
        if out.data.dtype.kind in "fc" and not lazy.all_finite(out.data):
            bad = "NaN" if np.isnan(out.data).any() else "Inf"
            shapes = ", ".join(str(x.shape) for x in inputs)
            raise AnomalyError(f"forward: {op}{at_step(out)} produced {bad} from inputs of shapes {shapes}; "
                               f"created at {origin}")

    def backward(self, node, parent_grads):
        for i, (parent, g) in enumerate(zip(node.parents, parent_grads)):
            if g is not None and not lazy.all_finite(g):
                raise AnomalyError(
                    f"backward: the gradient that {node.op}{at_step(node)} sends to its input {i} "
                    f"({label(parent)} {parent.shape}) contains NaN or Inf; {node.op} was created at "
                    f"{self.where(node)}")

