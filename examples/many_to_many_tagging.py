"""Many-to-many: tag every step of a sequence. The tag of token t is the token seen two steps earlier
(0 for the first two steps), so the network must carry memory; the loss is summed over every step.

    python examples/many_to_many_tagging.py        # a few seconds
"""
import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam


def batch(rng, T=10, B=32, vocab=5):
    ids = rng.integers(1, vocab, size=(T, B))
    tags = np.concatenate([np.zeros((2, B), dtype=np.int64), ids[:-2]])  # the token two steps back
    return ids, tags


def main(steps=200, cell="gru", seed=0):
    rng = np.random.default_rng(seed)
    model = nn.SequenceTagger(vocab_size=5, embed_size=8, hidden_size=32, n_tags=5, cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.02)
    for step in range(1, steps + 1):
        loss, _ = model.loss(*batch(rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    ids, tags = batch(rng, B=500)
    accuracy = np.mean(model.predict(ids) == tags)
    print(f"{cell} tagger: per-step accuracy {accuracy:.1%} on fresh sequences (chance 20–25%)")
    logits, tape = model.forward(ids[:, :1])
    print(f"one sequence unrolls into {len(tape.steps)} steps; the head's weight has copies "
          f"{[c.name for c in tape.copies(model.head.weight)][:3]} ...")
    return accuracy


if __name__ == "__main__":
    main()
