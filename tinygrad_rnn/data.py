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
