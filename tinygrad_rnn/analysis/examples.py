"""Ready-made networks for the analysis: the lecture's "hello" task, repeated to a longer sequence."""
import numpy as np

from .. import nn
from ..data import CharVocab


def orthogonal(d, seed=0):
    """A random d×d orthogonal matrix (QR of a Gaussian matrix, signs fixed so it is uniformly random)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def hello_sequence(repeats=5, hidden=16, init_scale=None, nonlinearity="tanh", seed=0, dtype=np.float64):
    """(model, xs, targets, vocab) for "hello" repeated `repeats` times, predicting the next character
    (T = 5·repeats − 1 steps over [h, e, l, o]).

    init_scale=None keeps nn.RNN's default initialisation; a number s sets W = s·Q with Q a random
    orthogonal matrix, so that λ = ‖W‖₂ = s exactly: s < 1 makes the gradients vanish (the bound
    (γλ)^gap), while s = 3 with d = 16 tanh units puts the network in its chaotic regime where
    ‖∂s_t/∂s_k‖ grows with the gap. (With d = 3, as on the slides, tanh saturates first and large
    weights make gradients vanish too: growth needs enough units to stay off saturation.)
    """
    if repeats < 1 or hidden < 1:
        raise ValueError(f"hello_sequence: repeats and hidden must be ≥ 1, got {repeats} and {hidden}")
    vocab = CharVocab("helo")
    text = "hello" * repeats
    model = nn.RNN(len(vocab), hidden, len(vocab), nonlinearity=nonlinearity, seed=seed, dtype=dtype)
    if init_scale is not None:
        model.W.data = (init_scale * orthogonal(hidden, seed)).astype(dtype)
    return model, vocab.one_hot(text[:-1], dtype=dtype), vocab.encode(text[1:]), vocab
