"""The four recurrent architectures of the lecture, each a small model on any cell ("rnn", "gru", "lstm"):

- many-to-many (SequenceTagger): a label per step, loss summed over every step (nn.RNN is one too);
- many-to-one (SequenceClassifier): read the whole sequence, predict from the last state only;
- one-to-many (generate): feed each sampled token back in, sampling with a temperature;
- sequence-to-sequence (Seq2Seq): an encoder's final state starts a decoder (teacher forcing in training,
  greedy decoding after).

Every step of every model runs inside `tape.step(t)` of one Unroll, so all of them record the unrolled
graph with per-step copies of their weights (encoder steps 1..S, decoder steps S+1..S+T).

Padded batches: every model takes `lengths` (B,) (Seq2Seq: src_lengths, tgt_lengths) and then runs as
nn/lengths.py describes — steps 1 … max(lengths) only, ended sequences keep their state, padded steps in
no loss — so each sequence gets the loss and gradients it would get alone (torch's packed sequences).
"""
import numpy as np

from .. import functional as F  # noqa: N812
from ..errors import ShapeError
from ..ops import stack
from ..tensor import Tensor, no_grad
from ..unroll import Unroll
from .cells import hidden_of, make_cell
from .lengths import IGNORE, alive_masks, checked_lengths, keep_ended, masked_targets, zero_padding
from .linear import Embedding, Linear
from .module import Module


def unroll(cell, xs, state=None, tape=None, start=1, embed=None, name="s", lengths=None):
    """Run `cell` over the T inputs xs, step t inside `tape.step(t)` for t = start, start + 1, ...

    xs: (T, B, n) / (T, n) floats, or integer ids (T, B) / (T,) when `embed` (an Embedding) is given —
    the lookup then happens inside the step, so the table has per-step copies too. Hidden states are
    named "s(t)" (`name`). Returns (hidden states h(1..T), final state, tape); the final state is the
    cell's (an LSTM's (h, c)). lengths (B,): a padded batch; only max(lengths) steps run, and the final
    state holds each sequence's state after its own last step (nn/lengths.py).
    """
    tape = Unroll() if tape is None else tape
    xs, masks = padded(xs, lengths, "unroll")
    hiddens = []
    for i in range(len(xs)):
        t = start + i
        with tape.step(t):
            if embed is not None:
                x = embed(xs[i])
            else:
                x = Tensor(np.asarray(xs[i], dtype=cell.dtype), name=f"x({t})")
            state = keep_ended(cell(x, state), state, masks[i])
            h = hidden_of(state)
            h.name = f"{name}({t})"
            hiddens.append(h)
    return hiddens, state, tape


def padded(xs, lengths, op):
    """(xs, masks): without lengths xs itself and no masks; with them xs cut to max(lengths) steps with its
    padding zeroed, and the alive mask of every step (None where no sequence has ended)."""
    if lengths is None:
        return xs, [None] * len(xs)
    xs = np.asarray(xs)
    if xs.ndim < 2:
        raise ValueError(f"{op}: lengths need a batch (inputs (T, B, ...)), got inputs of shape {xs.shape}")
    lengths = checked_lengths(op, lengths, xs.shape[0], xs.shape[1])
    masks = alive_masks(lengths)
    return zero_padding(xs[:len(masks)], lengths), masks


def _real_targets(targets, lengths, op):
    """Integer targets (T, B) with padded steps ignored, and how many real ones there are."""
    if lengths is None:
        return targets, targets.size
    if targets.ndim < 2:
        raise ValueError(f"{op}: lengths need a batch (targets (T, B)), got targets of shape {targets.shape}")
    lengths = checked_lengths(op, lengths, targets.shape[0], targets.shape[1])
    return masked_targets(targets[:int(lengths.max())], lengths), int(lengths.sum())


def _ids(ids, op):
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2):
        raise ValueError(f"{op}: expected integer ids of shape (T, B) or (T,), got {ids.dtype} {ids.shape}")
    return ids


class SequenceTagger(Module):
    """Many-to-many: ids (T, B) → a label distribution per step (an Embedding, a cell, a Linear head)."""

    def __init__(self, vocab_size, embed_size, hidden_size, n_tags, cell="gru", seed=None, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.embed = Embedding(vocab_size, embed_size, seed=rng, dtype=dtype)
        self.cell = make_cell(cell, embed_size, hidden_size, seed=rng, dtype=dtype)
        self.head = Linear(hidden_size, n_tags, seed=rng, dtype=dtype)

    def forward(self, ids, lengths=None):
        """(logits per step, tape): each step's head output is recorded inside its step. lengths (B,):
        a padded batch (only max(lengths) steps run; a padded step's logits mean nothing)."""
        ids, masks = padded(_ids(ids, "SequenceTagger"), lengths, "SequenceTagger")
        tape, state, logits = Unroll(), None, []
        for t in range(1, len(ids) + 1):
            with tape.step(t):
                state = keep_ended(self.cell(self.embed(ids[t - 1]), state), state, masks[t - 1])
                y = self.head(hidden_of(state))
                y.name = f"y({t})"
                logits.append(y)
        return logits, tape

    def loss(self, ids, tags, lengths=None):
        """Mean cross-entropy over every real step of every sequence; returns (loss, logits)."""
        tags, count = _real_targets(_ids(tags, "SequenceTagger.loss"), lengths, "SequenceTagger.loss")
        logits, _ = self.forward(ids, lengths)
        total = stack([F.cross_entropy(y, tags[t], reduction="sum", ignore_index=IGNORE)
                       for t, y in enumerate(logits)]).sum()
        return total * (1.0 / count), logits

    def predict(self, ids, lengths=None):
        """The likeliest tag of every step (T, B); with lengths, IGNORE (−100) at padded steps."""
        with no_grad():
            tags = np.stack([np.argmax(y.data, axis=-1) for y in self.forward(ids, lengths)[0]])
        return tags if lengths is None else masked_targets(tags, np.asarray(lengths))


class SequenceClassifier(Module):
    """Many-to-one: read xs (T, B, n) with a cell, predict from the last hidden state with a Linear head.
    `output_size` classes (use cross_entropy) or regression targets (use mse) — see loss()."""

    def __init__(self, input_size, hidden_size, output_size, cell="lstm", seed=None, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.cell = make_cell(cell, input_size, hidden_size, seed=rng, dtype=dtype)
        self.head = Linear(hidden_size, output_size, seed=rng, dtype=dtype)

    def forward(self, xs, lengths=None):
        """(prediction from the last step, tape); the head is applied inside the last step. lengths (B,):
        a padded batch, each sequence predicted from its state after its own last step (torch's h_n)."""
        xs = np.asarray(xs, dtype=self.cell.dtype)
        if xs.ndim not in (2, 3):
            raise ValueError(f"SequenceClassifier: inputs must have shape (T, B, n) or (T, n), "
                             f"got {xs.shape}")
        if len(xs) == 0:
            raise ValueError("SequenceClassifier: the input sequence is empty (T = 0): there is no last step "
                             "to predict from")
        xs, masks = padded(xs, lengths, "SequenceClassifier")
        tape, state, T = Unroll(), None, len(xs)
        for t in range(1, T + 1):
            with tape.step(t):
                state = keep_ended(self.cell(Tensor(xs[t - 1], name=f"x({t})"), state), state, masks[t - 1])
                hidden_of(state).name = f"s({t})"
                if t == T:
                    y = self.head(hidden_of(state))
        y.name = f"y({T})"
        return y, tape

    def loss(self, xs, targets, kind="classification", lengths=None):
        """Loss on the last step only: "classification" (mean cross-entropy, integer targets (B,)) or
        "regression" (mean squared error, targets (B, output_size) or (B,) for one output). lengths (B,):
        each sequence's last real step."""
        y, _ = self.forward(xs, lengths)
        if kind == "classification":
            return F.cross_entropy(y, np.asarray(targets), reduction="mean"), y
        if kind != "regression":
            raise ValueError(f"SequenceClassifier.loss: kind must be 'classification' or 'regression', "
                             f"got {kind!r}")
        targets = np.asarray(targets, dtype=y.dtype)
        one_output = y.shape[-1] == 1 and targets.shape == y.shape[:-1]  # (B,) for (B, 1): no pairing doubt
        if targets.shape != y.shape and not one_output:  # a same-size reshape would pair them wrongly
            raise ShapeError(f"SequenceClassifier.loss: regression targets {targets.shape} do not fit the "
                             f"predictions {y.shape} (expected {y.shape}"
                             f"{f' or {y.shape[:-1]}' if y.shape[-1] == 1 else ''}), as torch's mse_loss")
        targets = targets.reshape(y.shape)
        return ((y - targets) ** 2).mean(), y


class Encoder(Module):
    """Embedding + cell over source ids; its final state is the summary handed to a decoder."""

    def __init__(self, vocab_size, embed_size, hidden_size, cell="gru", seed=None, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.embed = Embedding(vocab_size, embed_size, seed=rng, dtype=dtype)
        self.cell = make_cell(cell, embed_size, hidden_size, seed=rng, dtype=dtype)

    def forward(self, ids, tape=None, start=1, lengths=None):
        hiddens, state, tape = unroll(self.cell, ids, None, tape, start, embed=self.embed, name="e",
                                      lengths=lengths)
        return state, tape


class Seq2Seq(Module):
    """Sequence to sequence: an Encoder reads the source; a decoder cell, started from the encoder's final
    state, emits the target one token at a time (token `bos` starts it). Source and target share
    `vocab_size` ids here for simplicity."""

    def __init__(self, vocab_size, embed_size, hidden_size, bos, cell="gru", seed=None, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.bos = int(bos)
        self.encoder = Encoder(vocab_size, embed_size, hidden_size, cell, seed=rng, dtype=dtype)
        self.embed = Embedding(vocab_size, embed_size, seed=rng, dtype=dtype)
        self.cell = make_cell(cell, embed_size, hidden_size, seed=rng, dtype=dtype)
        self.head = Linear(hidden_size, vocab_size, seed=rng, dtype=dtype)

    def loss(self, src, tgt, src_lengths=None, tgt_lengths=None):
        """Teacher forcing: decoder inputs are [bos, tgt[:-1]]; mean cross-entropy over the real target
        steps. src_lengths / tgt_lengths (B,): padded source / target batches (the decoder starts from each
        source's state after its own last step). Returns (loss, logits, tape)."""
        src, tgt = _ids(src, "Seq2Seq"), _ids(tgt, "Seq2Seq.loss")
        state, tape = self.encoder(src, lengths=src_lengths)
        inputs = np.concatenate([np.full_like(tgt[:1], self.bos), tgt[:-1]])
        inputs, masks = padded(inputs, tgt_lengths, "Seq2Seq.loss")
        tgt, count = _real_targets(tgt, tgt_lengths, "Seq2Seq.loss")
        logits, losses = [], []
        first = (tape.steps[-1] if tape.steps else 0) + 1  # the step after the encoder's last
        for i in range(len(tgt)):
            t = first + i
            with tape.step(t):
                state = keep_ended(self.cell(self.embed(inputs[i]), state), state, masks[i])
                y = self.head(hidden_of(state))
                y.name = f"y({t})"
                logits.append(y)
                losses.append(F.cross_entropy(y, tgt[i], reduction="sum", ignore_index=IGNORE))
        return stack(losses).sum() * (1.0 / count), logits, tape

    @no_grad()
    def translate(self, src, length, src_lengths=None):
        """Greedy decoding of `length` tokens for src (S, B) or (S,): each argmax is fed back in."""
        src = _ids(src, "Seq2Seq.translate")
        state, _ = self.encoder(src, lengths=src_lengths)
        token = np.full(src.shape[1:], self.bos, dtype=np.int64)
        out = []
        for _ in range(length):
            state = self.cell(self.embed(token), state)
            token = np.argmax(self.head(hidden_of(state)).data, axis=-1)
            out.append(token)
        return np.stack(out)


@no_grad()
def generate(model, prime_ids, n, temperature=1.0, rng=None):
    """One-to-many: run `model` (an nn.RNN over one-hot inputs) over prime_ids, then sample n more ids,
    each from softmax(logits / temperature) and fed back in as the next input. temperature → 0 is greedy,
    1 samples the model's distribution, > 1 flattens it. Returns the n sampled ids."""
    if temperature < 0:
        raise ValueError(f"generate: temperature must be ≥ 0, got {temperature}")
    prime_ids = np.asarray(prime_ids).reshape(-1)
    if prime_ids.size == 0:
        raise ValueError("generate: needs at least one prime id to start from")
    rng = np.random.default_rng(rng)
    eye = np.eye(model.input_size, dtype=model.dtype)
    state, logits = None, None
    for i in prime_ids:
        logits, state = model.step(eye[i], state)
    sampled = []
    for _ in range(n):
        z = logits.data.astype(np.float64)
        if temperature == 0:
            i = int(np.argmax(z))
        else:
            p = np.exp((z - z.max()) / temperature)
            i = int(rng.choice(len(p), p=p / p.sum()))
        sampled.append(i)
        logits, state = model.step(eye[i], state)
    return np.array(sampled, dtype=np.int64)
