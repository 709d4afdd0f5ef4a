"""Recompute what an RNNOutput recorded, on a private float64 twin of its model.

Every analysis function starts here. `L.backward()` frees the saved values of the graph it walked,
and a backward of our own would add into the model's `.grad`; a twin (same weights, copied to
float64) with fresh tapes avoids both, so the analysis works after training steps' backward and never
touches the caller's gradients. The twin uses the weights of the forward (the tape's copies hold
their arrays), so an optimizer step in between does not change the analysis — unless it updated the
arrays in place (`p.data -= ...`), which no recorded graph can see.
"""
import numpy as np

from .. import nn
from ..tensor import Tensor

_NAMES = ("U", "W", "b", "V", "c")


def twin(output):
    """A float64 nn.RNN holding the weights `output` was computed with (nothing done to it reaches the model).

    The weights are read from the tape's copies W(t), which hold the arrays of the forward: an optimizer
    that assigns new arrays (optim.SGD/Adam) afterwards does not change what is analysed.
    """
    model = output.model
    missing = [name for name in _NAMES + ("nonlinearity", "hidden_size") if not hasattr(model, name)]
    if missing or getattr(model, "cell_type", "rnn") != "rnn":
        raise TypeError(f"analysis: expected the output of a vanilla nn.RNN (cell='rnn': U, W, b, V, c), "
                        f"got {model!r}")
    copy = nn.RNN(model.input_size, model.hidden_size, model.output_size, model.nonlinearity, seed=0,
                  dtype=np.float64)
    recorded = {p: output.tape.copies(p)[0].data for p in output.tape.parameters}
    for name in _NAMES:
        P = getattr(model, name)
        getattr(copy, name).data = np.array(recorded.get(P, P.data), dtype=np.float64)
    return copy


def parameter_name(output, P, op):
    """The attribute name ("W", ...) of parameter P in output.model, or a clear error."""
    for name in _NAMES:
        if getattr(output.model, name, None) is P:
            return name
    names = ", ".join(_NAMES)
    raise ValueError(f"{op}: P must be one of the model's parameters ({names}), got "
                     f"{getattr(P, 'name', None) or type(P).__name__} {tuple(getattr(P, 'shape', ()))}")


def check_targets(output, op):
    if output.targets is None:
        raise ValueError(f"{op}: this output has no targets, so no losses L(t); "
                         "make it with model.loss(xs, targets), not model.forward(xs)")


def sequence(output, batch, op):
    """(xs (T, n), s0 (d,), targets (T,) or None) of sequence `batch`, as float64 arrays."""
    xs, s0, targets = output.inputs, output.s0, output.targets
    if xs.ndim == 3:
        B = xs.shape[1]
        if not isinstance(batch, (int, np.integer)) or not 0 <= batch < B:
            raise IndexError(f"{op}: batch must be an integer in [0, {B}) for inputs {xs.shape}, "
                             f"got {batch!r}")
        xs, s0 = xs[:, batch], s0[batch]
        targets = None if targets is None else targets[:, batch]
    elif batch != 0:
        raise IndexError(f"{op}: inputs {xs.shape} hold a single sequence, so batch must be 0, got {batch!r}")
    return xs.astype(np.float64), np.asarray(s0, dtype=np.float64), targets


def rerun(output, batch=None, s0=None):
    """(twin model, fresh RNNOutput) of the same forward (with losses when `output` has targets).

    batch=None reruns the whole batch; an integer reruns that one sequence (states become (d,)).
    s0: a Tensor to start from instead of output.s0 (e.g. a leaf that requires grad).
    """
    model = twin(output)
    if batch is None:
        xs, start, targets = output.inputs.astype(np.float64), output.s0, output.targets
    else:
        xs, start, targets = sequence(output, batch, "rerun")
    if s0 is None:
        s0 = Tensor(np.asarray(start, dtype=np.float64))
    if targets is None:
        return model, model.forward(xs, s0)
    return model, model.loss(xs, targets, s0)[1]


def step(model, x, s_prev, W=None):
    """One step of the lecture RNN, s = σ(x U + s_prev W + b), outside any tape (W may be replaced)."""
    a = Tensor(x) @ model.U + s_prev @ (model.W if W is None else W) + model.b
    return a.tanh() if model.nonlinearity == "tanh" else a.sigmoid()


def derivative(model, a):
    """σ'(a) for the model's nonlinearity, and γ = max σ' (1 for tanh, 1/4 for the logistic)."""
    if model.nonlinearity == "tanh":
        return 1 - np.tanh(a) ** 2, 1.0
    s = 1 / (1 + np.exp(-a))
    return s * (1 - s), 0.25
