"""The lecture network, row-vector convention:

    a_t = x_t U + s_{t-1} W + b,   s_t = σ(a_t),   y_t = softmax(s_t V + c),   L = Σ_t L_t

with U (n×d), W (d×d), b (d,), V (d×k), c (k,) and L_t = −log y_t[target_t]. Every step runs
inside `tape.step(t)`, so U, W, b, V, c are used through their copies U(t), W(t), … and nodes are
named as on the slides: a(t), s(t), y(t) (the logits), L(t), and L.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..ops import stack
from ..tensor import Parameter, Tensor
from ..unroll import Unroll
from .module import Module

_NONLINEARITIES = {"tanh": "tanh", "sigmoid": "sigmoid", "logistic": "sigmoid"}


@dataclass
class RNNOutput:
    """What one forward recorded: enough for the analysis tools to recompute anything after backward."""
    logits: list              # y(1..T) before softmax, Tensors
    states: list              # s(0..T), Tensors (s(0) is the initial state)
    preactivations: list      # a(1..T), Tensors
    tape: Unroll
    model: "RNN"
    inputs: np.ndarray        # (T, B, n) or (T, n)
    s0: np.ndarray
    targets: np.ndarray = None
    losses: list = field(default_factory=list)  # L(1..T) after loss()

    @property
    def T(self):
        return len(self.logits)


class RNN(Module):
    """The lecture RNN: RNN(input_size n, hidden_size d, output_size k, nonlinearity="tanh"|"sigmoid").

    Weights are initialised like PyTorch's RNN: uniform in ±1/√d from np.random.default_rng(seed).
    """

    def __init__(self, input_size, hidden_size, output_size, nonlinearity="tanh", seed=None, dtype=np.float32):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'sigmoid', got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.nonlinearity = _NONLINEARITIES[nonlinearity]
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(hidden_size)
        init = lambda *shape: rng.uniform(-bound, bound, size=shape).astype(dtype)  # noqa: E731
        self.U = Parameter(init(input_size, hidden_size), name="U")
        self.W = Parameter(init(hidden_size, hidden_size), name="W")
        self.b = Parameter(init(hidden_size), name="b")
        self.V = Parameter(init(hidden_size, output_size), name="V")
        self.c = Parameter(init(output_size), name="c")

    @property
    def dtype(self):
        return self.W.data.dtype

    def _inputs(self, xs):
        xs = np.asarray(xs.data if isinstance(xs, Tensor) else xs, dtype=self.dtype)
        if xs.ndim not in (2, 3) or xs.shape[-1] != self.input_size:
            raise ValueError(f"RNN.forward: inputs must have shape (T, B, {self.input_size}) or "
                             f"(T, {self.input_size}), got {xs.shape}")
        return xs

    def forward(self, xs, s0=None):
        """Run the unrolled network over xs (T, B, n) or (T, n); returns an RNNOutput."""
        return self._unroll(xs, s0, None)

    def loss(self, xs, targets, s0=None):
        """(L, output) with L = Σ_t Σ_batch cross_entropy(y_t, target_t): the lecture's L = Σ_t L_t.
        targets: integers of shape (T, B) or (T,). Each L(t) is recorded inside step t."""
        out = self._unroll(xs, s0, targets)
        L = stack(out.losses).sum()
        L.name = "L"
        return L, out

    def _unroll(self, xs, s0, targets):
        xs = self._inputs(xs)
        state_shape = xs.shape[1:-1] + (self.hidden_size,)
        if s0 is None:
            s0 = np.zeros(state_shape, dtype=self.dtype)
        s = s0 if isinstance(s0, Tensor) else Tensor(np.asarray(s0, dtype=self.dtype))
        if s.shape != state_shape:
            raise ValueError(f"RNN.forward: s0 must have shape {state_shape} for inputs {xs.shape}, got {s.shape}")
        if targets is not None:
            targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
            if targets.shape != xs.shape[:-1]:
                raise ValueError(f"RNN.loss: targets must have shape {xs.shape[:-1]} for inputs {xs.shape}, "
                                 f"got {targets.shape}")
        if s.name is None:
            s.name = "s(0)"
        tape = Unroll(shared=self.parameters())
        out = RNNOutput([], [s], [], tape, self, xs, s.data, targets)
        U, W, b, V, c = self.U, self.W, self.b, self.V, self.c
        for t in range(1, xs.shape[0] + 1):
            with tape.step(t):
                x = Tensor(xs[t - 1], name=f"x({t})")
                a = x @ U + s @ W + b
                s = a.tanh() if self.nonlinearity == "tanh" else a.sigmoid()
                y = s @ V + c
                a.name, s.name, y.name = f"a({t})", f"s({t})", f"y({t})"
                out.preactivations.append(a)
                out.states.append(s)
                out.logits.append(y)
                if targets is not None:
                    L_t = F.cross_entropy(y, targets[t - 1], reduction="sum")
                    L_t.name = f"L({t})"
                    out.losses.append(L_t)
        return out
