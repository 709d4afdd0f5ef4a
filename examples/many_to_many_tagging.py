"""Many-to-many: tag every step of a sequence. The tag of token t is the token seen two steps earlier
(0 for the first two steps), so the network must carry memory; the loss is summed over every step.

    python examples/many_to_many_tagging.py              # a few seconds
    python examples/many_to_many_tagging.py --variable   # sequences of 3..10 tokens in one padded batch

With --variable every batch mixes lengths: the ids are padded to the longest, `lengths=` tells the model
where each sequence ends, and the loss and accuracy count the real steps only (padding is ignored).
"""
import argparse

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.nn.lengths import IGNORE
from tinygrad_rnn.optim import Adam

PAD = 0  # the filler of padded steps (any id: the model never reads it)


def batch(rng, T=10, B=32, vocab=5, variable=False):
    """(ids, tags, lengths): lengths is None for fixed-length batches, else each sequence's real length."""
    ids = rng.integers(1, vocab, size=(T, B))
    tags = np.concatenate([np.zeros((2, B), dtype=np.int64), ids[:-2]])  # the token two steps back
    if not variable:
        return ids, tags, None
    lengths = rng.integers(3, T + 1, size=B)
    padded = np.arange(T)[:, None] >= lengths[None, :]
    ids[padded], tags[padded] = PAD, PAD
    return ids, tags, lengths


def accuracy(model, ids, tags, lengths):
    """The share of real steps tagged right (predict marks padded steps IGNORE)."""
    predicted = model.predict(ids, lengths)
    real = predicted != IGNORE
    return np.mean(predicted[real] == tags[:len(predicted)][real])


def main(steps=200, cell="gru", seed=0, variable=False):
    rng = np.random.default_rng(seed)
    model = nn.SequenceTagger(vocab_size=5, embed_size=8, hidden_size=32, n_tags=5, cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.02)
    for step in range(1, steps + 1):
        ids, tags, lengths = batch(rng, variable=variable)
        loss, _ = model.loss(ids, tags, lengths=lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    ids, tags, lengths = batch(rng, B=500, variable=variable)
    score = accuracy(model, ids, tags, lengths)
    kind = "variable-length" if variable else "fixed-length"
    print(f"{cell} tagger ({kind}): per-step accuracy {score:.1%} on fresh sequences (chance 20–25%)")
    logits, tape = model.forward(ids[:, :1], None if lengths is None else lengths[:1])
    print(f"one sequence unrolls into {len(tape.steps)} steps; the head's weight has copies "
          f"{[c.name for c in tape.copies(model.head.weight)][:3]} ...")
    return score


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variable", action="store_true", help="padded batches of sequences of 3..10 tokens")
    parser.add_argument("--cell", default="gru", choices=["rnn", "gru", "lstm"])
    args = parser.parse_args()
    main(cell=args.cell, variable=args.variable)
