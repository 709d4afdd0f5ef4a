"""Character vocabularies for the lecture's examples ("hello" over [h,e,l,o], "deep" over [d,e,p,<stop>])."""
import numpy as np


class CharVocab:
    """Tokens (usually single characters) ↔ integer ids, plus one-hot encoding.

    CharVocab("helo") has tokens [h, e, l, o] in that order; CharVocab(["d", "e", "p", "<stop>"]) has a
    multi-character stop token. CharVocab.from_text(text) takes the sorted distinct characters of a text.
    """

    def __init__(self, tokens):
        self.tokens = list(tokens)
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"CharVocab: tokens must be distinct, got {self.tokens}")
        self.index = {tok: i for i, tok in enumerate(self.tokens)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.tokens)

    def __repr__(self):
        return f"CharVocab({self.tokens})"

    def encode(self, seq):
        """A string (one token per character) or a list of tokens → int64 ids."""
        ids = []
        for pos, tok in enumerate(seq):
            if tok not in self.index:
                raise ValueError(f"CharVocab.encode: {tok!r} at position {pos} is not in the vocabulary "
                                 f"{self.tokens}")
            ids.append(self.index[tok])
        return np.array(ids, dtype=np.int64)

    def decode(self, ids):
        return "".join(self.tokens[int(i)] for i in np.asarray(ids).reshape(-1))

    def one_hot(self, seq, dtype=np.float32):
        """(T, len(vocab)) one-hot rows for a string/token list or an array of ids."""
        ids = np.asarray(seq) if isinstance(seq, np.ndarray) else self.encode(seq)
        return np.eye(len(self), dtype=dtype)[ids]


# --- corpora ------------------------------------------------------------------------------------------

def zen_of_python():
    """The default corpus: the Zen of Python, which ships with every Python as rot13 text in `this.s`
    decoded with codecs' rot13)."""
    import codecs
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # the first import of `this` prints the poem
        import this
    return codecs.decode(this.s, "rot13")


def load_text(path=None):
    """The text of a UTF-8 file, or the Zen of Python when path is None."""
    if path is None:
        return zen_of_python()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if len(text) < 2:
        raise ValueError(f"load_text: {path!r} holds {len(text)} characters; "
                         "a language model needs at least 2")
    return text


# --- batching -----------------------------------------------------------------------------------------

def windows(ids, seq_len, batch_size, rng=None):
    """One epoch of (inputs, targets) batches, each (seq_len, batch_size) int64 ids, targets = inputs shifted
    by one. The epoch cuts the text into non-overlapping windows of seq_len + 1 ids at a random phase
    (so every epoch sees different cuts), shuffles them and groups them into batches; when the text has
    fewer windows than batch_size, one batch is filled with windows at random starts.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"windows: seq_len and batch_size must be ≥ 1, got {seq_len}, {batch_size}")
    if len(ids) < seq_len + 1:
        raise ValueError(f"windows: the text has {len(ids)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                         "use a shorter --seq or a longer text")
    rng = np.random.default_rng(rng)
    last_start = len(ids) - seq_len - 1
    starts = np.arange(rng.integers(0, min(seq_len, last_start + 1)), last_start + 1, seq_len)
    if len(starts) < batch_size:
        starts = rng.integers(0, last_start + 1, size=batch_size)
    rng.shuffle(starts)
    offsets = np.arange(seq_len + 1)
    for i in range(0, len(starts) - batch_size + 1, batch_size):
        chunk = ids[starts[i:i + batch_size, None] + offsets].T  # (seq_len + 1, B)
        yield chunk[:-1], chunk[1:]


def unigram_entropy(ids):
    """Entropy (nats) of the token frequencies: the loss of a model that ignores all context."""
    counts = np.bincount(np.asarray(ids).reshape(-1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --- long-range tasks (the vanishing-gradient story) ---------------------------------------------------

def adding_problem(T, batch_size, rng=None, dtype=np.float32):
    """The adding problem (Hochreiter & Schmidhuber 1997): many-to-one regression.

    Inputs (T, B, 2): channel 0 holds random numbers in [0, 1), channel 1 marks two of them with 1 —
    one in the first half, one in the second half of the sequence. Target (B,): the sum of the two marked
    numbers. Predicting the mean 1.0 gives a mean squared error of 1/6 ≈ 0.167; beating that means the
    network carried the first marked number across at least T/2 steps.
    """
    if T < 2:
        raise ValueError(f"adding_problem: T must be ≥ 2, got {T}")
    rng = np.random.default_rng(rng)
    values = rng.random((T, batch_size))
    first = rng.integers(0, T // 2, size=batch_size)
    second = rng.integers(T // 2, T, size=batch_size)
    marks = np.zeros((T, batch_size))
    cols = np.arange(batch_size)
    marks[first, cols] = marks[second, cols] = 1
    targets = values[first, cols] + values[second, cols]
    return np.stack([values, marks], axis=-1).astype(dtype), targets.astype(dtype)


def copy_task(T, batch_size, n_symbols=8, length=10, rng=None):
    """The copy task (Arjovsky et al. 2016): remember `length` symbols across a delay of T steps.

    Ids over a vocabulary of n_symbols + 2: 1..n_symbols are data, 0 is blank, n_symbols + 1 the go
    marker. Inputs (T + 2·length, B): the symbols, T − 1 blanks, the marker, `length` blanks. Targets: blanks,
    then the symbols during the last `length` steps. A model that outputs blanks and guesses the symbols
    uniformly has a mean cross-entropy of length·log(n_symbols) / (T + 2·length).
    """
    if T < 1 or length < 1 or n_symbols < 1:
        raise ValueError(f"copy_task: T, length and n_symbols must be ≥ 1, got {T}, {length}, {n_symbols}")
    rng = np.random.default_rng(rng)
    symbols = rng.integers(1, n_symbols + 1, size=(length, batch_size))
    total = T + 2 * length
    inputs = np.zeros((total, batch_size), dtype=np.int64)
    targets = np.zeros((total, batch_size), dtype=np.int64)
    inputs[:length] = symbols
    inputs[length + T - 1] = n_symbols + 1
    targets[-length:] = symbols
    return inputs, targets
