"""One-to-many: generate a sequence from a single starting character. A small character-level language
model is trained on the Zen of Python, then every sampled character is fed back in as the next input,
drawn from softmax(logits / temperature): low temperatures repeat the likeliest text, high ones invent.

    python examples/one_to_many_generation.py            # a few seconds: windows of 40 characters
    python examples/one_to_many_generation.py --lines    # variable length: one sequence per line of the Zen

With --lines the training batch is the Zen's lines themselves, 20 sequences of 19 to 69 characters padded to
the longest: `model.loss(xs, targets, lengths=lengths)` runs each line for its own length only, so no
line's state or loss ever sees another line's characters or the padding.
"""
import argparse

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.data import CharVocab, unigram_entropy, zen_of_python
from tinygrad_rnn.optim import Adam
from tinygrad_rnn.train import sample, train_char_lm


def padded_lines(text, vocab):
    """(xs (T, B, V) one-hot, targets (T, B), lengths (B,)): each line (with its newline) predicts its next
    characters; padding is zeros (inputs) and 0 (targets), never read."""
    lines = [vocab.encode(line + "\n") for line in text.splitlines() if line.strip()]
    lengths = np.array([len(ids) - 1 for ids in lines])
    xs = np.zeros((lengths.max(), len(lines), len(vocab)), np.float32)
    targets = np.zeros((lengths.max(), len(lines)), np.int64)
    for b, ids in enumerate(lines):
        xs[:lengths[b], b] = vocab.one_hot(ids[:-1])
        targets[:lengths[b], b] = ids[1:]
    return xs, targets, lengths


def train_on_lines(text, updates, cell, seed, hidden=64, lr=1e-2):
    """An nn.RNN trained on the padded batch of all lines (Adam, mean loss per real character)."""
    vocab = CharVocab.from_text(text)
    xs, targets, lengths = padded_lines(text, vocab)
    model = nn.RNN(len(vocab), hidden, len(vocab), cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(updates):
        L, _ = model.loss(xs, targets, lengths=lengths)
        mean = L * (1.0 / lengths.sum())
        optimizer.zero_grad()
        mean.backward()
        optimizer.step()
        losses.append(mean.item())
    return model, vocab, losses, lengths


def main(updates=150, cell="rnn", seed=0, lines=False):
    zen = zen_of_python()
    entropy = unigram_entropy(CharVocab.from_text(zen).encode(zen))
    if lines:
        model, vocab, losses, lengths = train_on_lines(zen, updates, cell, seed)
        print(f"{cell} LM on {len(lengths)} lines of {lengths.min()}–{lengths.max()} characters, {updates} "
              f"updates: loss {np.mean(losses[-20:]):.2f} nats/char (unigram entropy {entropy:.2f})")
        history = losses
    else:
        model, vocab, history = train_char_lm(zen, cell=cell, hidden=64, seq=40, batch=32, lr=1e-2, seed=seed,
                                              max_steps=updates, progress=False)
        print(f"{cell} LM, {updates} updates: loss {history.final(20):.2f} nats/char "
              f"(unigram entropy {entropy:.2f}), {history.tokens_per_second:,.0f} tokens/s")
    for temperature in (0.2, 0.7, 1.2):
        print(f"\ntemperature {temperature}:")
        print(sample(model, vocab, "B", 120, temperature=temperature, seed=seed))
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", action="store_true", help="train on the Zen's lines, a padded variable-length batch")
    parser.add_argument("--cell", default="rnn", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--updates", type=int, default=150)
    args = parser.parse_args()
    main(updates=args.updates, cell=args.cell, lines=args.lines)
