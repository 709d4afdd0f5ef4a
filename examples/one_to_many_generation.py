"""One-to-many: generate a sequence from a single starting character. A small character-level language
model is trained on the Zen of Python, then every sampled character is fed back in as the next input,
drawn from softmax(logits / temperature): low temperatures repeat the likeliest text, high ones invent.

    python examples/one_to_many_generation.py      # a few seconds
"""
from tinygrad_rnn.data import CharVocab, unigram_entropy, zen_of_python
from tinygrad_rnn.train import sample, train_char_lm


def main(updates=150, cell="rnn", seed=0):
    zen = zen_of_python()
    model, vocab, history = train_char_lm(zen, cell=cell, hidden=64, seq=40, batch=32, lr=1e-2, seed=seed,
                                          max_steps=updates, progress=False)
    entropy = unigram_entropy(CharVocab.from_text(zen).encode(zen))
    print(f"{cell} LM, {updates} updates: loss {history.final(20):.2f} nats/char "
          f"(unigram entropy {entropy:.2f}), {history.tokens_per_second:,.0f} tokens/s")
    for temperature in (0.2, 0.7, 1.2):
        print(f"\ntemperature {temperature}:")
        print(sample(model, vocab, "B", 120, temperature=temperature, seed=seed))
    return history


if __name__ == "__main__":
    main()
