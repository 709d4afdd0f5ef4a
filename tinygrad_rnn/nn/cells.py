"""Recurrent cells: one time step, `cell(x, state) -> new state`, built from plain ops on Parameters.

Called inside `tape.step(t)` of an Unroll, every Parameter a cell uses is replaced by its per-step copy
(U(t), weight_hh(t), ...), so each cell's unrolled graph shows BPTT's copies like the lecture network's.
x is (B, input_size) or (input_size,); the state has the same leading shape with hidden_size features,
and `None` means zeros. Row-vector convention throughout: weights are (in, out), the transposes of
PyTorch's, with PyTorch's gate order along the out axis (load_torch/to_torch transpose).

- RNNCell (the lecture cell): s' = σ(x U + s W + b), U (n×d), W (d×d), b (d,).
- GRUCell (PyTorch's equations, gates r, z, n):
      r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)      z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
      n = tanh(x W_in + b_in + r * (h W_hn + b_hn))   h' = (1 − z) * n + z * h
  weight_ih (n, 3d) = [W_ir | W_iz | W_in], weight_hh (d, 3d), bias_ih (3d,), bias_hh (3d,).
- LSTMCell (PyTorch's equations, gates i, f, g, o), state (h, c):
      [i f g o] = x weight_ih + bias_ih + h weight_hh + bias_hh,  i, f, o sigmoid, g tanh
      c' = f * c + i * g,   h' = o * tanh(c')
  weight_ih (n, 4d), weight_hh (d, 4d), bias_ih (4d,), bias_hh (4d,).
Initialisation as PyTorch: U(±1/√hidden_size) from np.random.default_rng(seed).
"""
import numpy as np

from .. import tensor as _tensor
from .. import ops
from ..ops import affine, chunk
from ..tensor import Parameter, Tensor
from .linear import _check_torch_shape, _numpy, _torch_dtype, as_input, uniform_init
from .module import Module

# the vanilla cell's σ: the names a user may give -> the op (the notes call the sigmoid "logistic"; relu is
# torch.nn.RNN's other nonlinearity). The one table: RNNCell and nn.RNN both check it.
NONLINEARITIES = {"tanh": "tanh", "sigmoid": "sigmoid", "logistic": "sigmoid", "relu": "relu"}
_ACTIVATIONS = {"tanh": ops.tanh, "sigmoid": ops.sigmoid, "relu": ops.relu}


def _where():
    step = _tensor.current_step()
    return "" if step is None else f" at step {step.t}"


class _Cell(Module):
    """Shared plumbing: input/state checks and zero states."""
    n_gates = 1

    def _gate_parameters(self, input_size, hidden_size, seed, dtype):
        """PyTorch's layout for n_gates gates side by side (weights stored (in, out), see linear.py)."""
        init, width = self._init(input_size, hidden_size, seed, dtype), self.n_gates * hidden_size
        self.weight_ih = Parameter(init(input_size, width), name="weight_ih")
        self.weight_hh = Parameter(init(hidden_size, width), name="weight_hh")
        self.bias_ih = Parameter(init(width), name="bias_ih")
        self.bias_hh = Parameter(init(width), name="bias_hh")

    def _init(self, input_size, hidden_size, seed, dtype):
        self.input_size, self.hidden_size = input_size, hidden_size
        rng = np.random.default_rng(seed)
        return lambda *shape: uniform_init(rng, 1 / np.sqrt(hidden_size), shape, dtype)

    @property
    def dtype(self):
        return self.weight_hh.dtype

    def _input(self, x):
        x = as_input(x, self.dtype)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input must have shape (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x.shape)}{_where()}")
        return x

    def _hidden(self, x, h, what="state"):
        shape = x.shape[:-1] + (self.hidden_size,)
        if h is None:
            return Tensor(np.zeros(shape, dtype=self.dtype))
        h = as_input(h, self.dtype)
        if h.shape != shape:
            raise ValueError(f"{type(self).__name__}: {what} must have shape {shape} for input "
                             f"{tuple(x.shape)}, got {tuple(h.shape)}{_where()}")
        return h

    def __repr__(self):
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size})"

    # --- PyTorch interop (gate cells: weight_ih, weight_hh, bias_ih, bias_hh) ---------------------
    def _torch_names(self, suffix):
        return [("weight_ih", "weight_ih" + suffix), ("weight_hh", "weight_hh" + suffix),
                ("bias_ih", "bias_ih" + suffix), ("bias_hh", "bias_hh" + suffix)]

    def load_torch(self, module, suffix=""):
        """Copy weights from torch.nn.GRUCell/LSTMCell (a one-layer torch.nn.GRU/LSTM with suffix="_l0")."""
        op = f"{type(self).__name__}.load_torch"
        k = self.n_gates * self.hidden_size
        expected = {"weight_ih": (k, self.input_size), "weight_hh": (k, self.hidden_size),
                    "bias_ih": (k,), "bias_hh": (k,)}
        for ours, theirs in self._torch_names(suffix):
            t = getattr(module, theirs, None)
            if t is None:
                raise ValueError(f"{op}: the torch module {type(module).__name__} has no {theirs!r} "
                                 f"(bias=False is not supported)")
            _check_torch_shape(op, theirs, t, expected[ours])
        for ours, theirs in self._torch_names(suffix):
            p = getattr(self, ours)
            value = _numpy(getattr(module, theirs), p.dtype)
            p.data = value.T.copy() if value.ndim == 2 else value
        return self

    def to_torch(self):
        """An equivalent torch.nn.GRUCell/LSTMCell with these weights."""
        import torch
        cls = getattr(torch.nn, type(self).__name__)
        module = cls(self.input_size, self.hidden_size, dtype=_torch_dtype(self.dtype))
        self._copy_to_torch(module, "")
        return module

    def _copy_to_torch(self, module, suffix):
        import torch
        with torch.no_grad():
            for ours, theirs in self._torch_names(suffix):
                value = getattr(self, ours).data
                getattr(module, theirs).copy_(torch.from_numpy(value.T.copy() if value.ndim == 2 else value))


class RNNCell(_Cell):
    """The lecture cell s' = σ(x U + s W + b) with σ = tanh or the logistic sigmoid."""

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", seed=None, dtype=np.float32):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be one of {list(NONLINEARITIES)}, got {nonlinearity!r}")
        self.nonlinearity = NONLINEARITIES[nonlinearity]
        init = self._init(input_size, hidden_size, seed, dtype)
        self.U = Parameter(init(input_size, hidden_size), name="U")
        self.W = Parameter(init(hidden_size, hidden_size), name="W")
        self.b = Parameter(init(hidden_size), name="b")

    @classmethod
    def from_parameters(cls, U, W, b, nonlinearity="tanh"):
        """A cell that uses existing Parameters (nn.RNN's U, W, b) instead of new ones."""
        cell = cls.__new__(cls)
        cell.nonlinearity = NONLINEARITIES[nonlinearity]
        cell.input_size, cell.hidden_size = U.shape
        cell.U, cell.W, cell.b = U, W, b
        return cell

    @property
    def dtype(self):
        return self.W.dtype

    def forward(self, x, state=None):
        x = self._input(x)
        s = self._hidden(x, state)
        return self.activate(self.preactivation(x, s))

    def preactivation(self, x, s):
        """a = x U + s W + b, as one node (ops.affine); x and s already checked (nn.RNN checks the whole
        sequence once, then runs these two halves of the cell at every step, naming a(t) and s(t))."""
        return affine([(x, self.U), (s, self.W)], self.b)

    def activate(self, a):
        """s = σ(a)."""
        return _ACTIVATIONS[self.nonlinearity](a)

    def __repr__(self):
        return f"RNNCell({self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r})"

    def load_torch(self, module, suffix=""):
        """Copy weights from torch.nn.RNNCell (or a one-layer torch.nn.RNN with suffix="_l0"):
        U = weight_ihᵀ, W = weight_hhᵀ, b = bias_ih + bias_hh (the lecture cell has one bias)."""
        op = "RNNCell.load_torch"
        if getattr(module, "nonlinearity", "tanh") != self.nonlinearity:
            raise ValueError(f"{op}: the torch module uses {module.nonlinearity!r}, "
                             f"this cell {self.nonlinearity!r}")
        d, n = self.hidden_size, self.input_size
        w_ih, w_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
        _check_torch_shape(op, "weight_ih" + suffix, w_ih, (d, n))
        _check_torch_shape(op, "weight_hh" + suffix, w_hh, (d, d))
        b = np.zeros(d, dtype=np.float64)
        for name in ("bias_ih" + suffix, "bias_hh" + suffix):
            if getattr(module, name, None) is not None:
                b = b + _numpy(getattr(module, name), np.float64)
        self.U.data = _numpy(w_ih, self.dtype).T.copy()
        self.W.data = _numpy(w_hh, self.dtype).T.copy()
        self.b.data = b.astype(self.dtype)
        return self

    def to_torch(self):
        """torch.nn.RNNCell(nonlinearity="tanh" or "relu") with weight_ih = Uᵀ, weight_hh = Wᵀ, bias_ih = b and
        bias_hh = 0 frozen (requires_grad=False): the lecture cell has one bias, and torch would otherwise
        train both (each gets ∂L/∂b), so a twin trained beside this cell would drift. PyTorch has no
        logistic-sigmoid RNN cell, so a sigmoid cell cannot be converted."""
        import torch
        if self.nonlinearity == "sigmoid":
            raise ValueError("RNNCell.to_torch: torch.nn.RNNCell supports tanh and relu only, "
                             "this cell uses sigmoid")
        module = torch.nn.RNNCell(self.input_size, self.hidden_size, nonlinearity=self.nonlinearity,
                                  dtype=_torch_dtype(self.dtype))
        self._copy_to_torch(module, "")
        return module

    def _copy_to_torch(self, module, suffix):
        import torch
        with torch.no_grad():
            getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(self.U.data.T.copy()))
            getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(self.W.data.T.copy()))
            getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(self.b.data))
            getattr(module, "bias_hh" + suffix).zero_()
        getattr(module, "bias_hh" + suffix).requires_grad_(False)  # one bias, as the lecture cell


class GRUCell(_Cell):
    """PyTorch's GRU cell (gates r, z, n); see the module docstring for the equations."""
    n_gates = 3

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32):
        self._gate_parameters(input_size, hidden_size, seed, dtype)

    def forward(self, x, state=None):
        x = self._input(x)
        h = self._hidden(x, state)
        gi_r, gi_z, gi_n = chunk(affine([(x, self.weight_ih)], self.bias_ih), 3, -1)
        gh_r, gh_z, gh_n = chunk(affine([(h, self.weight_hh)], self.bias_hh), 3, -1)
        r = (gi_r + gh_r).sigmoid()
        z = (gi_z + gh_z).sigmoid()
        n = (gi_n + r * gh_n).tanh()
        return n + z * (h - n)  # = (1 − z) * n + z * h


class LSTMCell(_Cell):
    """PyTorch's LSTM cell (gates i, f, g, o); state and result are (h, c)."""
    n_gates = 4

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32):
        self._gate_parameters(input_size, hidden_size, seed, dtype)

    def forward(self, x, state=None):
        x = self._input(x)
        if state is None:
            h = c = None
        elif isinstance(state, (tuple, list)) and len(state) == 2:
            h, c = state
        else:
            raise TypeError(f"LSTMCell: state must be a pair (h, c) or None, "
                            f"got {type(state).__name__}{_where()}")
        h, c = self._hidden(x, h, "h"), self._hidden(x, c, "c")
        gates = affine([(x, self.weight_ih), (h, self.weight_hh)], self.bias_ih) + self.bias_hh
        i, f, g, o = chunk(gates, 4, -1)  # torch.chunk: 4 equal gate blocks
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        return o * c.tanh(), c


CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


def make_cell(cell, input_size, hidden_size, nonlinearity="tanh", seed=None, dtype=np.float32):
    """nn.RNNCell / GRUCell / LSTMCell by name ("rnn", "gru", "lstm")."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
    if cell == "rnn":
        return RNNCell(input_size, hidden_size, nonlinearity, seed=seed, dtype=dtype)
    return CELLS[cell](input_size, hidden_size, seed=seed, dtype=dtype)


def hidden_of(state):
    """The hidden vector h of a cell state (the state itself, or h of an LSTM's (h, c))."""
    return state[0] if isinstance(state, tuple) else state
