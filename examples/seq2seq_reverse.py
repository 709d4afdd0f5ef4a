"""Sequence to sequence: an encoder reads a sequence of digits, its final state starts a decoder that
writes the digits in reverse order. Training uses teacher forcing; evaluation decodes greedily. Encoder
steps are 1..S and decoder steps S+1..2S of one Unroll, so the graph shows both halves in order.

    python examples/seq2seq_reverse.py             # a few seconds
"""
import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam

BOS = 10  # digits 0..9, then the start-of-output token


def main(steps=300, length=4, cell="gru", seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Seq2Seq(vocab_size=11, embed_size=16, hidden_size=64, bos=BOS, cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.01)
    for step in range(1, steps + 1):
        src = rng.integers(0, 10, size=(length, 32))
        loss, _, tape = model.loss(src, src[::-1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    src = rng.integers(0, 10, size=(length, 500))
    out = model.translate(src, length)
    exact = np.mean(np.all(out == src[::-1], axis=0))
    digits = np.mean(out == src[::-1])
    print(f"{cell} seq2seq: {digits:.1%} of digits, {exact:.1%} of whole sequences reversed")
    print("e.g.", "".join(map(str, src[:, 0])), "->", "".join(map(str, out[:, 0])))
    print(f"encoder steps {[c.step for c in tape.copies(model.encoder.cell.weight_hh)]}, "
          f"decoder steps {[c.step for c in tape.copies(model.cell.weight_hh)]}")
    return exact


if __name__ == "__main__":
    main()
