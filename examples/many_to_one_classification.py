"""Many-to-one: read a whole sequence, classify it from the last state only. Each sequence of ±1 values
is labelled by its majority sign, so the network must count across all steps; the loss is the
cross-entropy at the last step, and BPTT carries it back to every earlier copy of W.

    python examples/many_to_one_classification.py  # a few seconds
"""
import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam


def batch(rng, T=15, B=64):
    xs = rng.choice([-1.0, 1.0], size=(T, B, 1)).astype(np.float32)
    labels = (xs.sum(axis=(0, 2)) > 0).astype(np.int64)  # T odd: no ties
    return xs, labels


def main(steps=150, cell="rnn", seed=0):
    rng = np.random.default_rng(seed)
    model = nn.SequenceClassifier(input_size=1, hidden_size=16, output_size=2, cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.02)
    for step in range(1, steps + 1):
        loss, _ = model.loss(*batch(rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    xs, labels = batch(rng, B=1000)
    y, tape = model.forward(xs)
    accuracy = np.mean(np.argmax(y.data, axis=-1) == labels)
    print(f"{cell} classifier: accuracy {accuracy:.1%} on fresh sequences (chance 50%)")
    return accuracy


if __name__ == "__main__":
    main()
