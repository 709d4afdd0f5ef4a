"""Ready-made networks for the analysis: the lecture's "hello" and "deep" tasks, repeated to longer
sequences, and the "deep" slide's table of predicted against true probabilities as a computed loss."""
import numpy as np

from .. import nn
from ..data import CharVocab


def orthogonal(d, seed=0):
    """A random d×d orthogonal matrix (QR of a Gaussian matrix, signs fixed so it is uniformly random)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def hello_sequence(repeats=5, hidden=16, init_scale=None, nonlinearity="tanh", seed=0, dtype=np.float64, cell="rnn"):
    """(model, xs, targets, vocab) for "hello" repeated `repeats` times, predicting the next character
    (T = 5·repeats − 1 steps over [h, e, l, o]).

    init_scale=None keeps nn.RNN's default initialisation; a number s sets W = s·Q with Q a random
    orthogonal matrix, so that λ = ‖W‖₂ = s exactly: s < 1 makes the gradients vanish (the bound
    (γλ)^gap), while s = 3 with d = 16 tanh units puts the network in its chaotic regime where
    ‖∂s_t/∂s_k‖ grows with the gap. (With d = 3, as on the slides, tanh saturates first and large
    weights make gradients vanish too: growth needs enough units to stay off saturation.)
    """
    return _sequence("hello", CharVocab("helo"), list("hello"), repeats, hidden, init_scale, nonlinearity, seed,
                     dtype, cell)


def _sequence(op, vocab, tokens, repeats, hidden, init_scale, nonlinearity, seed, dtype, cell):
    if repeats < 1 or hidden < 1:
        raise ValueError(f"{op}_sequence: repeats and hidden must be ≥ 1, got {repeats} and {hidden}")
    if init_scale is not None and cell != "rnn":
        raise ValueError(f"{op}_sequence: init_scale sets the vanilla cell's W; cell={cell!r} has none")
    text = tokens * repeats
    if cell == "rnn":
        model = nn.RNN(len(vocab), hidden, len(vocab), nonlinearity=nonlinearity, seed=seed, dtype=dtype)
    else:
        model = nn.RNN(len(vocab), hidden, len(vocab), seed=seed, dtype=dtype, cell=cell)
    if init_scale is not None:
        model.W.data = (init_scale * orthogonal(hidden, seed)).astype(dtype)
    return model, vocab.one_hot(text[:-1], dtype=dtype), vocab.encode(text[1:]), vocab


def deep_sequence(repeats=1, hidden=3, init_scale=None, nonlinearity="tanh", seed=0, dtype=np.float64, cell="rnn"):
    """(model, xs, targets, vocab) for the slides' autocompletion example over [d, e, p, <stop>]:
    inputs "deep", targets "eep<stop>" (repeats > 1: "deep<stop>" repeated, T = 5·repeats − 1)."""
    tokens = ["d", "e", "e", "p", "<stop>"]
    return _sequence("deep", CharVocab(DEEP_VOCAB), tokens, repeats, hidden, init_scale, nonlinearity, seed,
                     dtype, cell)


DEEP_VOCAB = ["d", "e", "p", "<stop>"]
# The slide's table (rows t = 1 … 4, columns d, e, p, <stop>): the predicted probabilities, and the
# character it marks as true at each step. (Its columns sum to 1.1: illustrative numbers, not a softmax.)
DEEP_SLIDE_PREDICTED = np.array([[0.2, 0.7, 0.1, 0.1],
                                 [0.2, 0.7, 0.1, 0.1],
                                 [0.2, 0.1, 0.7, 0.1],
                                 [0.2, 0.1, 0.7, 0.1]])
DEEP_SLIDE_TRUE = ["e", "e", "p", "p"]


def slide_loss(predicted=DEEP_SLIDE_PREDICTED, true=DEEP_SLIDE_TRUE, vocab=DEEP_VOCAB):
    """(L, per-step L_t) of the slide's formula L = Σ_t L_t, L_t = −log y_tc (y_tc: the predicted
    probability of the true character at step t), computed by the engine on the slide's table."""
    from ..tensor import Tensor
    ids = CharVocab(vocab).encode(true)
    losses = -(Tensor(np.asarray(predicted, dtype=np.float64)).log()[np.arange(len(ids)), ids])
    return float(losses.sum().item()), losses.data.copy()


def probability_table(predicted, true, vocab=DEEP_VOCAB, title="predicted / true"):
    """The slide's layout: one row per character, per step the predicted probability and the true one
    (1 for the target, else 0), then L_t = −log y_tc per step and the total."""
    ids = CharVocab(vocab).encode(true)
    predicted = np.asarray(predicted)
    steps = range(1, len(ids) + 1)
    lines = [title, "        " + "".join(f"   t={t}: pred true" for t in steps)]
    for c, token in enumerate(vocab):
        cells = "".join(f"        {predicted[t - 1, c]:5.3f}  {int(ids[t - 1] == c)}  " for t in steps)
        lines.append(f"{token:>7s} " + cells)
    losses = -np.log(predicted[np.arange(len(ids)), ids])
    lines.append("    L_t " + "".join(f"        {L:5.3f}      " for L in losses))
    lines.append(f"    L = Σ_t −log y_tc = {losses.sum():.4f}")
    return "\n".join(lines)
