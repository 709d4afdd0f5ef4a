"""`tinygrad-rnn analyze`: contributions, gradient flow and per-step gradients of an example network,
as PNG (or PDF) files plus a short report with the vanishing/exploding verdict."""
import os

import numpy as np

NAME = "analyze"
HELP = ("BPTT analysis of an example RNN: contributions ∂L_t/∂W(k), ‖∂s_t/∂s_k‖ against its bound, "
        "per-step ∂L/∂W(t), and a vanishing/exploding verdict")
EXAMPLES = ("hello",)


def add_arguments(parser):
    parser.add_argument("--example", default="hello", help=f"the network and sequence: {', '.join(EXAMPLES)} "
                        '("hello" repeated; default)')
    parser.add_argument("--init-scale", type=float, default=None, metavar="S",
                        help="set W = S·Q with Q random orthogonal, so ‖W‖₂ = S (0.5: vanishing, 3.0: exploding); "
                             "default: nn.RNN's own initialisation")
    parser.add_argument("--repeats", type=int, default=5, help='how many times "hello" is repeated (T = 5·R − 1; '
                        "default 5, T = 24)")
    parser.add_argument("--hidden", type=int, default=16, help="hidden size d (default 16)")
    parser.add_argument("--nonlinearity", choices=("tanh", "sigmoid"), default="tanh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncate", type=int, default=None, metavar="K",
                        help="also report the truncation bias of truncated BPTT with segments of K steps")
    parser.add_argument("--format", choices=("png", "pdf"), default="png", help="file format of the figures")
    parser.add_argument("-o", "--output", default="analysis", help="directory for the figures (default ./analysis)")


def run(args):
    from ..cli import UsageError
    from .contributions import contributions
    from .examples import hello_sequence
    from .flow import gradient_flow
    from .plots import plot_contributions, plot_gradient_flow, plot_step_grads
    from .truncation import truncation_bias

    if args.example not in EXAMPLES:
        raise UsageError(f"unknown example {args.example!r}; choose from {', '.join(EXAMPLES)}")
    if args.repeats < 1 or args.hidden < 1:
        raise UsageError(f"--repeats and --hidden must be ≥ 1, got {args.repeats} and {args.hidden}")
    if args.init_scale is not None and not (np.isfinite(args.init_scale) and args.init_scale > 0):
        raise UsageError(f"--init-scale must be a positive number, got {args.init_scale}")
    if args.truncate is not None and args.truncate < 1:
        raise UsageError(f"--truncate must be ≥ 1, got {args.truncate}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: exists and is not a directory")

    model, xs, targets, vocab = hello_sequence(args.repeats, args.hidden, args.init_scale, args.nonlinearity,
                                               args.seed)
    L, out = model.loss(xs, targets)
    L.backward()
    flow = gradient_flow(out)
    C = contributions(out, model.W)
    scale = "nn.RNN default init" if args.init_scale is None else f"W = {args.init_scale:g}·Q (Q orthogonal)"
    print(f'analyze: "hello" × {args.repeats} (T = {out.T}), d = {args.hidden}, {args.nonlinearity}, {scale}, '
          f"L = {L.item():.4f}")
    print(flow.summary())
    total = C.sum(axis=(0, 1))
    print(f"contributions: Σ_t Σ_k ∂L_t/∂W(k) = ∂L/∂W (max |difference| {np.abs(total - model.W.grad).max():.1e})")
    gaps = np.subtract.outer(np.arange(out.T), np.arange(out.T))
    norms = np.sqrt((C.reshape(out.T, out.T, -1) ** 2).sum(axis=-1))
    near, far = norms[(gaps >= 0) & (gaps < 5)].sum(), norms[gaps >= 5].sum()
    print(f"  share of Σ‖∂L_t/∂W(k)‖ from k ≥ t − 4: {near / (near + far):.1%}, from farther back: "
          f"{far / (near + far):.1%}")
    if args.truncate is not None:
        bias = truncation_bias(out, args.truncate)
        print(f"truncated BPTT (k = {args.truncate}): ‖full − truncated‖/‖full‖ = {bias.relative:.3f}, "
              f"cos = {bias.cosine:.4f}")

    os.makedirs(args.output, exist_ok=True)
    figures = {"contributions": plot_contributions(out), "gradient_flow": plot_gradient_flow(flow),
               "step_grads": plot_step_grads(out)}
    for name, fig in figures.items():
        path = os.path.join(args.output, f"{name}.{args.format}")
        fig.savefig(path, dpi=120)
        print(f"  wrote {path}")
    print(f"verdict: {flow.verdict}")
    return 0
