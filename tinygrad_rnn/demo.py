"""The lecture's "hello" network trained by BPTT, with its per-step gradient copies W(t) shown."""
import numpy as np

from . import nn
from .cli_checks import non_negative_int, positive_finite, positive_int
from .data import CharVocab
from .errors import UsageError
from .gradcheck import check_close, gradcheck

NAME = "demo"
HELP = 'train the lecture\'s "hello" RNN by BPTT and show the per-step copies W(t) summing to ∂L/∂W'


# The gradcheck perturbs each of the P ≈ d² + 10·d parameters twice, ≈ 0.2 ms per forward pass of "hell"
# (measured at d = 3-64): at d = 256 that is 2 × 67,600 passes, ≈ 30 s; d = 1000 would take over an hour.
MAX_HIDDEN = 256


def add_arguments(parser):
    parser.add_argument("--hidden", type=positive_int, default=3,
                        help=f"hidden size d (default 3, as on the slides; at most {MAX_HIDDEN})")
    parser.add_argument("--lr", type=positive_finite, default=0.5, help="SGD learning rate (default 0.5)")
    parser.add_argument("--epochs", type=positive_int, default=500, help="maximum number of epochs (default 500)")
    parser.add_argument("--seed", type=non_negative_int, default=0)


def hello_example(hidden=3, seed=0, dtype=np.float32):
    """(model, xs, targets, vocab): inputs "hell", targets "ello" over the vocabulary [h, e, l, o]."""
    vocab = CharVocab("helo")
    model = nn.RNN(len(vocab), hidden, len(vocab), seed=seed, dtype=dtype)
    return model, vocab.one_hot("hell", dtype=dtype), vocab.encode("ello"), vocab


def sgd_step(params, lr):
    for p in params:
        p.data = p.data - lr * p.grad  # a new array: graphs recorded before keep the old values
        p.grad = None


def run(args):
    if args.hidden > MAX_HIDDEN:
        parameters = args.hidden ** 2 + 10 * args.hidden + 4
        raise UsageError(f"--hidden {args.hidden}: the demo's gradcheck would run 2 × {parameters:,} forward "
                         f"passes (one per parameter and sign, ≈ {2 * parameters * 2e-4 / 60:,.0f} min or more); "
                         f"use --hidden ≤ {MAX_HIDDEN}")
    model, xs, targets, vocab = hello_example(args.hidden, args.seed)
    print(f'Training the lecture RNN (d = {args.hidden}, tanh) on "hell" -> "ello" over {vocab.tokens}, plain SGD')
    for epoch in range(1, args.epochs + 1):
        L, out = model.loss(xs, targets)
        if not np.isfinite(L.item()):
            raise FloatingPointError(f"demo: the loss became {L.item()} at epoch {epoch}; lower --lr {args.lr:g}")
        L.backward()
        predicted = vocab.decode(np.argmax([y.data for y in out.logits], axis=-1))
        if epoch == 1 or epoch % 50 == 0 or predicted == "ello" and L.item() < 0.1:
            print(f"  epoch {epoch:4d}  L = {L.item():.4f}  predicts {predicted!r}")
        if predicted == "ello" and L.item() < 0.1:
            break
        sgd_step(model.parameters(), args.lr)
    print(f"  -> predicts {predicted!r} from 'hell' after {epoch} epochs\n")

    # The BPTT gradient of the trained network, recomputed in float64 and checked by finite differences.
    model64, xs64, _, _ = hello_example(args.hidden, args.seed, np.float64)
    for p64, p in zip(model64.parameters(), model.parameters()):
        p64.data = p.data.astype(np.float64)
    gradcheck(lambda *params: model64.loss(xs64, targets)[0], model64.parameters())
    print("gradcheck: BPTT gradients of U, W, b, V, c match central finite differences (float64)\n")

    L, out = model64.loss(xs64, targets)
    L.backward()
    step_grads = out.tape.step_grads(model64.W)
    print("Per-step copies of the shared W: ∂L/∂W = Σ_t ∂L/∂W(t)")
    print("   t   ‖∂L/∂W(t)‖_F")
    for t, g in zip(out.tape.steps, step_grads):
        print(f"  {t:2d}   {np.linalg.norm(g):.6f}")
    total = step_grads.sum(axis=0)
    diff = np.abs(total - model64.W.grad).max()
    print(f"  Σ_t   {np.linalg.norm(total):.6f}   = ‖∂L/∂W‖ {np.linalg.norm(model64.W.grad):.6f}"
          f"   (max |Σ_t ∂L/∂W(t) − ∂L/∂W| = {diff:.1e})")
    # check_close fails on NaN or Inf too (a plain `diff > 1e-12` is False for NaN)
    check_close(total, model64.W.grad, "demo: the per-step copies do not sum to the shared gradient ∂L/∂W",
                "Σ_t ∂L/∂W(t)", "∂L/∂W", atol=1e-12, rtol=0.0, eps=None)
    return 0
