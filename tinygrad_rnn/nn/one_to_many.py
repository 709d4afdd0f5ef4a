"""One-to-many with gradients: a fixed input at step 1 generates a sequence (Karpathy's "one to many",
image captioning's shape), trained with teacher forcing.

    x_1 = [v | 0],   x_t = [0 | onehot(y_{t−1})] (t > 1),   s_t = cell(x_t, s_{t−1}),   L = Σ_t CE(s_t V + c, y_t)

v (B, m) is the fixed input (a feature vector) and y_1 … y_T the target tokens over a vocabulary of k.
During training the true previous token is fed back (teacher forcing); `generate` feeds back the model's
own prediction instead. The recurrence is an nn.RNN over inputs of width m + k, so `loss` returns its
RNNOutput: the unrolled graph with the copies U(t), W(t), … per step, `tape.step_grads`, viz and every
function of `tinygrad_rnn.analysis` work on it unchanged — and the feature reaches the loss of step t
only through ∂s_t/∂s_1, since it enters at step 1 alone.
"""
import numpy as np

from ..ops import softmax
from ..tensor import Tensor, no_grad
from .module import Module
from .rnn import RNN


class OneToMany(Module):
    """OneToMany(feature_size m, vocab_size k, hidden_size d, cell="rnn"|"gru"|"lstm"): generate k-token
    sequences from one feature vector. `model.rnn` is the nn.RNN(m + k, d, k) it runs."""

    def __init__(self, feature_size, vocab_size, hidden_size, cell="rnn", nonlinearity="tanh", seed=None,
                 dtype=np.float32):
        if feature_size < 1 or vocab_size < 1:
            raise ValueError(f"OneToMany: feature_size and vocab_size must be ≥ 1, got {feature_size}, "
                             f"{vocab_size}")
        self.feature_size, self.vocab_size = feature_size, vocab_size
        self.rnn = RNN(feature_size + vocab_size, hidden_size, vocab_size, nonlinearity=nonlinearity, seed=seed,
                       dtype=dtype, cell=cell)

    def __repr__(self):
        return f"OneToMany({self.feature_size}, {self.vocab_size}, {self.rnn.hidden_size}, cell={self.rnn.cell_type!r})"

    def _feature(self, feature, op):
        v = np.asarray(feature.data if isinstance(feature, Tensor) else feature, dtype=self.rnn.dtype)
        if v.ndim not in (1, 2) or v.shape[-1] != self.feature_size:
            raise ValueError(f"{op}: the feature must have shape (B, {self.feature_size}) or "
                             f"({self.feature_size},), got {v.shape}")
        return v

    def inputs(self, feature, tokens):
        """The teacher-forced inputs (T, [B,] m + k): the feature at step 1, then the previous target token."""
        v = self._feature(feature, "OneToMany.inputs")
        tokens = np.asarray(tokens)
        if tokens.ndim != v.ndim or tokens.shape[1:] != v.shape[:-1] or len(tokens) < 1:
            want = "(T,)" if v.ndim == 1 else f"(T, {v.shape[0]})"
            raise ValueError(f"OneToMany.loss: tokens must have shape {want} with T ≥ 1 for a feature of shape "
                             f"{v.shape}, got {tokens.shape}")
        if tokens.dtype.kind not in "iu" or tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"OneToMany.loss: tokens must be integers in [0, {self.vocab_size}), got "
                             f"{tokens.dtype} values {tokens.min()} … {tokens.max()}")
        xs = np.zeros(tokens.shape + (self.feature_size + self.vocab_size,), dtype=self.rnn.dtype)
        xs[0, ..., :self.feature_size] = v
        previous = np.eye(self.vocab_size, dtype=self.rnn.dtype)[tokens[:-1]]
        xs[1:, ..., self.feature_size:] = previous
        return xs

    def loss(self, feature, tokens):
        """(L, output): L = Σ_t Σ_batch CE(y_t, tokens_t) with teacher forcing; output is the nn.RNN's
        RNNOutput (tape, states, logits, losses L(1..T)) for viz and the analysis."""
        return self.rnn.loss(self.inputs(feature, tokens), tokens)

    def generate(self, feature, n, temperature=0.0, seed=None):
        """n tokens from one feature (m,): each step's prediction (greedy at temperature 0, else sampled
        from softmax(logits / temperature)) is fed back as the next input."""
        if temperature < 0:
            raise ValueError(f"OneToMany.generate: temperature must be ≥ 0, got {temperature}")
        v = self._feature(feature, "OneToMany.generate")
        if v.ndim != 1:
            raise ValueError(f"OneToMany.generate: one feature of shape ({self.feature_size},), got {v.shape}")
        rng = np.random.default_rng(seed)
        x = np.concatenate([v, np.zeros(self.vocab_size, dtype=v.dtype)])
        state, tokens = None, []
        with no_grad():
            for _ in range(n):
                logits, state = self.rnn.step(x, state)
                if temperature == 0:
                    token = int(np.argmax(logits.data))
                else:
                    p = softmax(Tensor(logits.data.astype(np.float64) / temperature)).data
                    token = int(rng.choice(self.vocab_size, p=p / p.sum()))
                tokens.append(token)
                x = np.zeros_like(x)
                x[self.feature_size + token] = 1
        return np.array(tokens, dtype=np.int64)
