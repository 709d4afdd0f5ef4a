"""What every analysis function needs of a recurrent model, rerun in float64 by the model's own cell.

A `Recording` holds a private float64 twin of the model (the weights of the recorded forward, found by
name through `named_parameters()`), the cell inputs of every step, the initial state, and the loss as a
function of the states. Nothing done to it reaches the model or its `.grad`.

The state of step t is packed into one vector of width w: the hidden vector h_t (w = d) for the vanilla
and GRU cells, [h_t | c_t] (w = 2d) for the LSTM, so ∂state_t/∂state_k is one (w, w) matrix whose
blocks are ∂h_t/∂h_k, ∂h_t/∂c_k, ∂c_t/∂h_k and ∂c_t/∂c_k.

`recording(x)` accepts an RNNOutput of nn.RNN (cell "rnn", "gru" or "lstm", from model.loss or
model.forward), or a Recording made by `record(model, inputs, targets)` for the taggers, the classifier
and the Seq2Seq encoder of nn/architectures.py.
"""
import copy
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F  # noqa: N812
from ..nn import architectures as arch
from ..nn.cells import LSTMCell, hidden_of
from ..ops import affine, concat
from ..tensor import Tensor, no_grad


@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
class Recording:
    """One recorded forward of a recurrent model, ready to be differentiated step by step."""
    model: object             # float64 twin (its parameters do not require grad)
    cell: object              # the twin's recurrent cell: cell(x, state) -> state
    inputs: np.ndarray        # (T, B, n) float64: what the cell reads at steps 1..T
    state0: np.ndarray        # (B, w) packed initial state
    hidden_size: int
    paired: bool              # LSTM: state (h, c), packed as [h | c]
    head: object              # Tensor (T, B, w) of states 1..T -> scalar loss L = Σ_t L_t, or None
    names: dict               # the original model's Parameters -> dotted names
    single: bool              # the inputs were one sequence (T, n)
    label: str                # e.g. "nn.RNN(cell='lstm', d=16)" for titles
    loss_kind: str = "cross-entropy per step"
    lengths: np.ndarray = None  # (B,) real steps of a padded batch (nn.RNN lengths=): later states are held
    _states: np.ndarray = field(default=None, repr=False)

    @property
    def T(self):
        return self.inputs.shape[0]

    @property
    def B(self):
        return self.inputs.shape[1]

    @property
    def width(self):
        return 2 * self.hidden_size if self.paired else self.hidden_size

    @property
    def cell_type(self):
        return {"RNNCell": "rnn", "GRUCell": "gru", "LSTMCell": "lstm"}.get(type(self.cell).__name__, "cell")

    def pack(self, state):
        """A cell's state as one Tensor (…, w): h, or [h | c] for the LSTM."""
        return concat(list(state), axis=-1) if self.paired else state

    def unpack(self, flat):
        """The inverse of pack, on Tensors (views of `flat`)."""
        d = self.hidden_size
        return (flat[..., :d], flat[..., d:]) if self.paired else flat

    def states(self):
        """(T+1, B, w) packed states s_0 … s_T as arrays (computed once, without a graph)."""
        if self._states is None:
            states = [self.state0]
            with no_grad():
                for x in self.inputs:
                    states.append(self.pack(self.cell(Tensor(x), self.unpack(Tensor(states[-1])))).data)
            self._states = np.stack(states)
        return self._states

    def parameter(self, P, op):
        """The twin's parameter for P (a Parameter of the original model, or its dotted name)."""
        name = P if isinstance(P, str) else self.names.get(P)
        twins = dict(self.model.named_parameters())
        if name not in twins:
            given = repr(P) if isinstance(P, str) else _describe(P)
            raise ValueError(f"{op}: P must be one of the model's parameters ({', '.join(twins)}), got {given}")
        return name, twins[name]

    def check_head(self, op):
        if self.head is None:
            raise ValueError(f"{op}: this output has no targets, so no losses L(t); "
                             "make it with model.loss(xs, targets), not model.forward(xs)")

    def sequence(self, batch, op):
        """Check `batch` (an index into the B sequences) and return it."""
        if not isinstance(batch, (int, np.integer)) or not 0 <= batch < self.B:
            shape = (self.T,) + self.inputs.shape[2:] if self.single else self.inputs.shape
            need = ("a single sequence, so batch must be 0" if self.B == 1
                    else f"{self.B} sequences, batch in [0, {self.B})")
            raise IndexError(f"{op}: inputs {shape} hold {need}, got batch = {batch!r}")
        return int(batch)


def _describe(P):
    return f"{getattr(P, 'name', None) or type(P).__name__} {tuple(getattr(P, 'shape', ()))}"


def twin(model, recorded=None):
    """A float64 copy of `model` (deep copy, so any architecture and cell) whose parameters hold the
    arrays of `recorded` ({Parameter: array}, e.g. what the tape's copies hold) or their own, and do
    not require grad: the analysis differentiates with respect to states and nodes, never by .grad."""
    recorded = recorded or {}
    copied = copy.deepcopy(model)
    for (_, P), (_, Q) in zip(model.named_parameters(), copied.named_parameters()):
        Q.data = np.array(recorded.get(P, P.data), dtype=np.float64)
        Q.grad, Q.requires_grad = None, False
    return copied


def _batched(array, single):
    """(T, n) → (T, 1, n) so that every Recording holds a batch axis."""
    array = np.asarray(array, dtype=np.float64)
    return array[:, None] if single else array


def _from_rnn_output(output):
    model = output.model
    recorded = {p: output.tape.copies(p)[0].data for p in output.tape.parameters}
    clone = twin(model, recorded)
    single = output.inputs.ndim == 2
    xs = _batched(output.inputs, single)
    paired = model.cell_type == "lstm"
    h0 = np.asarray(output.s0, dtype=np.float64).reshape(xs.shape[1], -1)
    if paired:
        c0 = np.asarray(output.cell_states[0].data, dtype=np.float64).reshape(h0.shape)
        h0 = np.concatenate([h0, c0], axis=-1)
    head = None
    if output.targets is not None:
        d = model.hidden_size

        def head(S):  # L = Σ_t L_t of the output's own loss (cross-entropy or BCE, padded steps left out)
            H = S[..., :d].reshape(-1, d)
            return output.summed_loss(affine([(H, clone.V)], clone.c))
    extra = f", {model.nonlinearity}" if model.cell_type == "rnn" else ""
    kind = "binary cross-entropy per step" if output.loss_kind == "bce" else "cross-entropy per step"
    return Recording(clone, clone.cell, xs, h0, model.hidden_size, paired, head,
                     {p: n for n, p in model.named_parameters()}, single,
                     f"nn.RNN(cell={model.cell_type!r}{extra}, d={model.hidden_size})", kind,
                     None if output.lengths is None else np.asarray(output.lengths))


def recording(x):
    """A Recording of `x`: an RNNOutput of nn.RNN (any cell) or a Recording (returned as it is)."""
    if isinstance(x, Recording):
        return x
    if hasattr(x, "tape") and hasattr(x, "model") and hasattr(getattr(x, "model"), "cell_type"):
        return _from_rnn_output(x)
    raise TypeError(f"analysis: expected the RNNOutput of an nn.RNN (model.loss or model.forward) or "
                    f"a Recording from analysis.record(model, inputs, targets), got {type(x).__name__}")


def _embedded(clone, ids):
    with no_grad():
        return np.asarray(clone.embed(ids).data, dtype=np.float64)


def record(model, inputs, targets=None, kind="classification"):
    """A Recording of one forward of an architecture of nn/architectures.py, for the analysis:

    - SequenceClassifier(inputs (T, B, n) floats, targets (B,) classes or regression values, kind as
      in its loss): the loss is at step T only;
    - SequenceTagger(ids (T, B), tags (T, B)): a loss at every step (the tagger's mean cross-entropy);
    - Seq2Seq(src (S, B), tgt (T', B)): the encoder's recurrence over the S source steps; the loss is the
      decoder's (teacher forcing), a function of the encoder's final state only.
    The cell's inputs are recomputed from the twin (embedded ids for the taggers). Only the recurrence's
    and the head's parameters have per-step contributions; for Seq2Seq only the encoder cell's.
    """
    names = {p: n for n, p in model.named_parameters()}
    clone = twin(model)
    if isinstance(model, arch.SequenceClassifier):
        xs = np.asarray(inputs, dtype=np.float64)
        single = xs.ndim == 2
        xs, cell = _batched(xs, single), clone.cell
        head = None if targets is None else _classifier_head(clone, np.asarray(targets), kind, xs.shape[1])
        label, loss_kind = "SequenceClassifier", f"{kind} loss at step T"
    elif isinstance(model, arch.SequenceTagger):
        ids = np.asarray(inputs)
        single = ids.ndim == 1
        ids = ids[:, None] if single else ids
        xs, cell = _embedded(clone, ids), clone.cell
        head = None if targets is None else _tagger_head(clone, np.asarray(targets).reshape(ids.shape))
        label, loss_kind = "SequenceTagger", "mean cross-entropy over the steps"
    elif isinstance(model, arch.Seq2Seq):
        ids = np.asarray(inputs)
        single = ids.ndim == 1
        ids = ids[:, None] if single else ids
        xs, cell = _embedded(clone.encoder, ids), clone.encoder.cell
        head = None if targets is None else _decoder_head(clone, np.asarray(targets), single)
        label, loss_kind = "Seq2Seq encoder", "decoder loss (a function of the final encoder state)"
    else:
        raise TypeError(f"analysis.record: expected a SequenceClassifier, SequenceTagger or Seq2Seq, got "
                        f"{type(model).__name__} (for nn.RNN pass its RNNOutput to the analysis directly)")
    paired = isinstance(cell, LSTMCell)
    d = cell.hidden_size
    state0 = np.zeros((xs.shape[1], 2 * d if paired else d))
    return Recording(clone, cell, xs, state0, d, paired, head, names, single,
                     f"{label}(cell={type(cell).__name__}, d={d})", loss_kind)


def _classifier_head(clone, targets, kind, B):
    d = clone.cell.hidden_size

    def head(S):
        y = clone.head(S[-1][..., :d])
        if kind == "classification":
            return F.cross_entropy(y, targets.reshape(B), reduction="mean")
        if kind != "regression":
            raise ValueError(f"analysis.record: kind must be 'classification' or 'regression', got {kind!r}")
        return ((y - Tensor(targets.astype(np.float64).reshape(y.shape))) ** 2).mean()
    return head


def _tagger_head(clone, tags):
    d = clone.cell.hidden_size

    def head(S):  # one GEMM over all steps: the head's node rows are (t, b)
        y = clone.head(S[..., :d].reshape(-1, d))
        return F.cross_entropy(y, tags.reshape(-1), reduction="sum") * (1.0 / tags.size)
    return head


def _decoder_head(clone, tgt, single):
    tgt = tgt[:, None] if single else tgt
    inputs = np.concatenate([np.full_like(tgt[:1], clone.bos), tgt[:-1]])
    paired = isinstance(clone.cell, LSTMCell)
    d = clone.cell.hidden_size

    def head(S):  # Seq2Seq.loss's decoder, started from the encoder's last state
        last = S[-1]
        state = (last[..., :d], last[..., d:]) if paired else last
        losses = []
        for i in range(len(tgt)):
            state = clone.cell(clone.embed(inputs[i]), state)
            losses.append(F.cross_entropy(clone.head(hidden_of(state)), tgt[i], reduction="sum"))
        total = losses[0]
        for L in losses[1:]:
            total = total + L
        return total * (1.0 / tgt.size)
    return head
