"""The lecture network, row-vector convention:

    a_t = x_t U + s_{t-1} W + b,   s_t = σ(a_t),   y_t = softmax(s_t V + c),   L = Σ_t L_t

with U (n×d), W (d×d), b (d,), V (d×k), c (k,) and L_t = −log y_t[target_t]. Every step runs
inside `tape.step(t)`, so U, W, b, V, c are used through their copies U(t), W(t), … and nodes are
named as on the slides: a(t), s(t), y(t) (the logits), L(t), and L.

With cell="gru" or "lstm" the recurrence s_t = cell(x_t, s_{t-1}) is PyTorch's GRU/LSTM cell (its
Parameters live in `model.cell`: cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh) and the
output layer is still y_t = s_t V + c. States s(t) are the hidden vectors h_t; an LSTM's memory cells
are recorded as C(0..T) in `output.cell_states`. `output.preactivations` holds a(t) for the vanilla cell
only (gated cells have no single pre-activation), so it is empty for gru/lstm.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..batched import cross_entropy_steps, linear_steps
from ..ops import affine, stack
from ..tensor import Parameter, Tensor
from ..unroll import Unroll
from .cells import CELLS, NONLINEARITIES, RNNCell, hidden_of, make_cell
from .lengths import IGNORE, alive_masks, checked_lengths, keep_ended, masked_targets, zero_padding
from .linear import _check_torch_shape, _numpy, _torch_dtype
from .module import Module

@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
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
    cell_states: list = field(default_factory=list)  # LSTM only: memory cells C(0..T)
    lengths: np.ndarray = None  # (B,) real steps per sequence, or None: every step of every sequence is real
    loss_kind: str = "cross_entropy"  # or "bce": what L(t) is (see RNN.loss)

    @property
    def T(self):
        return len(self.logits)

    def summed_loss(self, logits):
        """L = Σ_t L_t recomputed from every step's logits stacked as rows, (T·B, k) or (T, k), in step order:
        the loss this output's L(t) are made of (its kind, its targets, its padded steps left out), for tools
        that rerun the network (the analysis recomputes ∂L_t/∂s_t with it)."""
        rows = logits.shape[0]
        if self.loss_kind == "bce":
            real = None if self.lengths is None else (np.arange(1, self.T + 1)[:, None] <= self.lengths[None, :])
            return step_loss("bce", logits, self.targets.reshape(rows, -1), None if real is None else
                             real.reshape(rows, 1))
        return step_loss("cross_entropy", logits, self.targets.reshape(rows))


def step_loss(kind, logits, targets, alive=None):
    """Σ over the rows of one step's loss: "cross_entropy" (integer targets, IGNORE where padded) or "bce"
    (targets in [0, 1] of the logits' shape; alive (B, 1) masks the rows of ended sequences)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum", weight=alive)
    return F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)


class RNN(Module):
    """The lecture RNN: RNN(input_size n, hidden_size d, output_size k, nonlinearity="tanh"|"sigmoid"|"relu",
    cell="rnn"|"gru"|"lstm") (relu as torch.nn.RNN(nonlinearity="relu")).

    cell="rnn" (default) has Parameters U, W, b, V, c; "gru"/"lstm" have cell.weight_ih, cell.weight_hh,
    cell.bias_ih, cell.bias_hh (PyTorch's equations and gate order, transposed layout) and V, c.
    `model.cell` is the recurrent cell for every kind (for "rnn" an RNNCell sharing U, W, b).
    Weights are initialised like PyTorch's RNN: uniform in ±1/√d from np.random.default_rng(seed).
    """

    def __init__(self, input_size, hidden_size, output_size, nonlinearity="tanh", seed=None, dtype=np.float32,
                 cell="rnn"):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {list(NONLINEARITIES)}, got {nonlinearity!r}")
        if cell not in CELLS:
            raise ValueError(f"RNN: cell must be one of {list(CELLS)}, got {cell!r}")
        if cell != "rnn" and NONLINEARITIES[nonlinearity] != "tanh":
            raise ValueError(f"RNN: nonlinearity applies to the vanilla cell only, not to cell={cell!r}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.nonlinearity = NONLINEARITIES[nonlinearity]
        self.cell_type = cell
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(hidden_size)
        init = lambda *shape: rng.uniform(-bound, bound, size=shape).astype(dtype)  # noqa: E731
        if cell == "rnn":
            self.U = Parameter(init(input_size, hidden_size), name="U")
            self.W = Parameter(init(hidden_size, hidden_size), name="W")
            self.b = Parameter(init(hidden_size), name="b")
        else:
            self.cell = make_cell(cell, input_size, hidden_size, seed=rng, dtype=dtype)
        self.V = Parameter(init(hidden_size, output_size), name="V")
        self.c = Parameter(init(output_size), name="c")
        if cell == "rnn":  # registered after V, c: its U, W, b are already named by the model
            self.cell = RNNCell.from_parameters(self.U, self.W, self.b, self.nonlinearity)

    @property
    def dtype(self):
        return self.V.data.dtype

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if self.cell_type == "rnn" else ""
        sizes = f"{self.input_size}, {self.hidden_size}, {self.output_size}"
        return f"RNN({sizes}, cell={self.cell_type!r}{extra})"

    def step(self, x, state=None):
        """One step outside any tape: (logits y, new state) for x (B, n) or (n,). For generation
        (under no_grad); the state is an LSTM's (h, c) pair, else the hidden vector."""
        state = self.cell(x, state)
        return hidden_of(state) @ self.V + self.c, state

    def _inputs(self, xs):
        xs = np.asarray(xs.data if isinstance(xs, Tensor) else xs, dtype=self.dtype)
        if xs.ndim not in (2, 3) or xs.shape[-1] != self.input_size:
            raise ValueError(f"RNN.forward: inputs must have shape (T, B, {self.input_size}) or "
                             f"(T, {self.input_size}), got {xs.shape}")
        return xs

    def forward(self, xs, s0=None, lengths=None):
        """Run the unrolled network over xs (T, B, n) or (T, n); returns an RNNOutput.

        lengths (B,): the real length of each sequence of a padded batch (nn/lengths.py says what runs
        and what a copy W(t) means then); only steps 1 … max(lengths) are recorded."""
        return self._unroll(xs, s0, None, lengths)

    def loss(self, xs, targets, s0=None, lengths=None, loss="cross_entropy"):
        """(L, output) with L = Σ_t L_t, the lecture's sum of per-step losses; each L(t) is recorded
        inside step t.

        loss="cross_entropy": L_t = Σ_batch −log softmax(y_t)[target_t], targets integers (T, B) or (T,).
        loss="bce" (lecture 23): L_t = Σ_batch Σ_j −[y log ŷ + (1 − y) log(1 − ŷ)] with ŷ = sigmoid(y_t),
        computed stably from the logits; targets y in [0, 1] of the outputs' shape (T, B, k) or (T, k).
        lengths (B,): padded steps (t > lengths[b]) count for nothing, whatever their targets hold."""
        if loss not in ("cross_entropy", "bce"):
            raise ValueError(f"RNN.loss: loss must be 'cross_entropy' or 'bce', got {loss!r}")
        out = self._unroll(xs, s0, targets, lengths, loss)
        L = stack(out.losses).sum()
        L.name = "L"
        return L, out

    def _initial(self, s0, state_shape, xs, what="s0"):
        if s0 is None:
            s0 = np.zeros(state_shape, dtype=self.dtype)
        s = s0 if isinstance(s0, Tensor) else Tensor(np.asarray(s0, dtype=self.dtype))
        if s.shape != state_shape:
            raise ValueError(f"RNN.forward: {what} must have shape {state_shape} for inputs {xs.shape}, "
                             f"got {s.shape}")
        return s

    def _unroll(self, xs, s0, targets, lengths=None, loss_kind="cross_entropy"):
        xs = self._inputs(xs)
        masks = None
        if lengths is not None:
            if xs.ndim != 3:
                raise ValueError(f"RNN.forward: lengths need a batch, inputs (T, B, {self.input_size}); "
                                 f"got {xs.shape}")
            lengths = checked_lengths("RNN.forward", lengths, xs.shape[0], xs.shape[1])
            masks = alive_masks(lengths)
            xs = zero_padding(xs[:len(masks)], lengths)
        state_shape = xs.shape[1:-1] + (self.hidden_size,)
        if self.cell_type == "lstm":
            if s0 is not None and not (isinstance(s0, (tuple, list)) and len(s0) == 2):
                raise TypeError("RNN.forward: an LSTM's s0 must be a pair (h0, c0) or None")
            h0, c0 = (None, None) if s0 is None else s0
            s, memory = self._initial(h0, state_shape, xs, "h0"), self._initial(c0, state_shape, xs, "c0")
        else:
            s = self._initial(s0, state_shape, xs)
        if targets is not None:
            targets = self._targets(targets, xs, lengths, loss_kind)
        if s.name is None:
            s.name = "s(0)"
        tape = Unroll(shared=self.parameters())
        out = RNNOutput([], [s], [], tape, self, xs, s.data, targets, lengths=lengths, loss_kind=loss_kind)
        return self._run(out, s, memory if self.cell_type == "lstm" else None, masks)

    def _targets(self, targets, xs, lengths, loss_kind):
        """The targets, checked once here (so that each step can use its loss op directly) and copied (the
        caller may refill its buffer before backward); a padded step's are set to count for nothing."""
        targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
        if lengths is not None:
            targets = targets[:len(xs)]
        expected = xs.shape[:-1] + ((self.output_size,) if loss_kind == "bce" else ())
        if targets.shape != expected:
            raise ValueError(f"RNN.loss: targets must have shape {expected} for inputs {xs.shape}"
                             f"{' and loss=bce' if loss_kind == 'bce' else ''}, got {targets.shape}")
        if loss_kind == "bce":
            targets = np.array(targets, dtype=self.dtype) if lengths is None else zero_padding(
                targets.astype(self.dtype), lengths)
            if not (targets.min(initial=0) >= 0 and targets.max(initial=0) <= 1):  # NaN fails this too
                raise ValueError("RNN.loss: loss='bce' needs targets in [0, 1]")
            return targets
        if lengths is None:
            F.check_class_targets("RNN.loss", targets, self.output_size)
            return targets.copy()
        F.check_class_targets("RNN.loss", targets[zero_padding(np.ones(targets.shape, bool), lengths)],
                              self.output_size)  # only the real steps' targets must be classes
        return masked_targets(targets, lengths)

    def _run(self, out, s, memory, masks=None):
        """The unrolled network, every cell: s(t) = cell(x(t), s(t−1)) inside step t, then the output side.

        The vanilla cell runs as its two halves, a(t) = x(t) U(t) + s(t−1) W(t) + b(t) (one node) and
        s(t) = σ(a(t)), so that a(t) is named and kept; inputs were checked once for the whole sequence.
        A GRU's s(t) is its h_t; an LSTM's state is (h_t, C(t)), its memory cells recorded in cell_states.
        masks (variable lengths, nn/lengths.py): ended sequences keep their state; then, as for loss="bce",
        y(t) and L(t) are made inside each step (the all-steps-at-once output side has one loss only)."""
        xs, tape, cell = out.inputs, out.tape, self.cell
        vanilla = self.cell_type == "rnn"
        per_step = masks is not None or out.loss_kind != "cross_entropy"
        alive = None
        if memory is not None:
            if memory.name is None:
                memory.name = "C(0)"
            out.cell_states.append(memory)
        with tape:  # (pauses the cyclic collector while the graph grows, see recording.gc_paused)
            for t in range(1, xs.shape[0] + 1):
                with tape.step(t):
                    x = Tensor(xs[t - 1], name=f"x({t})")
                    previous = s, memory
                    if vanilla:
                        a = cell.preactivation(x, s)
                        s = cell.activate(a)
                        a.name = f"a({t})"
                        out.preactivations.append(a)
                    elif memory is None:
                        s = cell(x, s)
                    else:
                        s, memory = cell(x, (s, memory))
                    alive = None if masks is None else masks[t - 1]
                    if alive is not None:  # some sequences ended: they keep their state
                        s = keep_ended(s, previous[0], alive)
                        memory = None if memory is None else keep_ended(memory, previous[1], alive)
                    if memory is not None:
                        memory.name = f"C({t})"
                        out.cell_states.append(memory)
                    s.name = f"s({t})"
                    out.states.append(s)
                    if per_step:
                        self._step_output(out, s, t, alive)
            if not per_step:
                self._output_layer(out)
        return out

    def _step_output(self, out, s, t, alive):
        """y(t) = s(t) V(t) + c(t) and, with targets, L(t), made inside step t (variable lengths, bce)."""
        y = affine([(s, self.V)], self.c)
        y.name = f"y({t})"
        out.logits.append(y)
        if out.targets is None:
            return
        L_t = step_loss(out.loss_kind, y, out.targets[t - 1], alive)
        L_t.name = f"L({t})"
        out.losses.append(L_t)

    def _output_layer(self, out):
        """The output side, shared by every cell: y(t) = s(t) V(t) + c(t) and, with targets, L(t).

        It does not feed the recurrence, so it runs for all steps at once (one GEMM, one softmax; see
        batched.py) while the graph still holds y(t) and L(t) inside every step, with their own copies."""
        ys = linear_steps(out.tape, out.states[1:], self.V, self.c)
        for t, y in enumerate(ys, start=1):
            y.name = f"y({t})"
        out.logits.extend(ys)
        if out.targets is not None:
            losses = cross_entropy_steps(ys, out.targets)  # targets checked in _unroll
            for t, L_t in enumerate(losses, start=1):
                L_t.name = f"L({t})"
            out.losses.extend(losses)

    # --- PyTorch interop ------------------------------------------------------------------------------
    def to_torch(self):
        """An equivalent torch module: `.rnn` (torch.nn.RNN/GRU/LSTM, one layer, time-major) and `.out`
        (torch.nn.Linear); calling it on xs (T, B, n) or (T, n) returns (logits, final state) — the
        logits of every step, stacked. A vanilla sigmoid network has no torch equivalent (ValueError)."""
        import torch
        if self.cell_type == "rnn" and self.nonlinearity == "sigmoid":
            raise ValueError("RNN.to_torch: torch.nn.RNN supports tanh and relu only, "
                             "this network uses sigmoid")
        layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[self.cell_type]
        dtype = _torch_dtype(self.dtype)
        extra = {"nonlinearity": self.nonlinearity} if self.cell_type == "rnn" else {}

        class TorchRNN(torch.nn.Module):
            def __init__(self, n, d, k):
                super().__init__()
                self.rnn = layer(n, d, dtype=dtype, **extra)
                self.out = torch.nn.Linear(d, k, dtype=dtype)

            def forward(self, xs, state=None):
                hs, last = self.rnn(xs, state)
                return self.out(hs), last

        module = TorchRNN(self.input_size, self.hidden_size, self.output_size)
        self.cell._copy_to_torch(module.rnn, "_l0")
        with torch.no_grad():
            module.out.weight.copy_(torch.from_numpy(self.V.data.T.copy()))
            module.out.bias.copy_(torch.from_numpy(self.c.data))
        return module

    def load_torch(self, module):
        """Copy weights from a torch module with `.rnn` (a one-layer, unidirectional torch.nn.RNN/GRU/LSTM
        matching this cell) and `.out` (torch.nn.Linear(hidden, output)) — what to_torch() returns."""
        op = "RNN.load_torch"
        rnn, out = getattr(module, "rnn", None), getattr(module, "out", None)
        if rnn is None or out is None:
            raise ValueError(f"{op}: expected a torch module with .rnn and .out (as to_torch() returns), "
                             f"got {type(module).__name__}")
        kind = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}.get(type(rnn).__name__)
        if kind != self.cell_type:
            raise ValueError(f"{op}: .rnn is a torch.nn.{type(rnn).__name__}, "
                             f"this network has cell={self.cell_type!r}")
        if rnn.num_layers != 1 or rnn.bidirectional:
            raise ValueError(f"{op}: only one-layer, unidirectional torch RNNs convert")
        # (batch_first only changes the layout of torch's inputs, not its weights; ours are time-major)
        _check_torch_shape(op, "out.weight", out.weight, (self.output_size, self.hidden_size))
        self.cell.load_torch(rnn, suffix="_l0")
        self.V.data = _numpy(out.weight, self.dtype).T.copy()
        self.c.data = _numpy(out.bias, self.dtype)
        return self
