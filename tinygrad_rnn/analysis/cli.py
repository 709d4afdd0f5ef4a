"""`tinygrad-rnn analyze`: contributions, gradient flow and per-step gradients of an example network,
as PNG (or PDF) files plus a short report ending with the vanishing/exploding verdict."""
import os

import numpy as np

NAME = "analyze"
HELP = ("BPTT analysis of an example RNN: contributions ∂L_t/∂W(k), ‖∂s_t/∂s_k‖ against its bound, "
        "per-step ∂L/∂W(t), and a vanishing/exploding verdict")
EXAMPLES = ("hello",)
NEAR = 5  # the report splits the contributions into the last NEAR steps and everything farther back


def add_arguments(parser):
    parser.add_argument("--example", default="hello", choices=EXAMPLES,
                        help='the network and sequence ("hello" repeated, predicting the next character)')
    parser.add_argument("--init-scale", type=float, default=None, metavar="S",
                        help="set W = S·Q with Q random orthogonal, so ‖W‖₂ = S "
                             "(0.5: vanishing, 3.0: exploding); default: nn.RNN's own initialisation")
    parser.add_argument("--repeats", type=int, default=5,
                        help='how many times "hello" is repeated (T = 5·R − 1; default 5, T = 24)')
    parser.add_argument("--hidden", type=int, default=16, help="hidden size d (default 16)")
    parser.add_argument("--nonlinearity", choices=("tanh", "sigmoid"), default="tanh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncate", type=int, default=None, metavar="K",
                        help="also report the truncation bias of truncated BPTT with segments of K steps")
    parser.add_argument("--format", choices=("png", "pdf"), default="png", help="file format of the figures")
    parser.add_argument("-o", "--output", default="analysis",
                        help="directory for the figures (default ./analysis)")


def run(args):
    from ..errors import UsageError
    from .contributions import contribution_norms
    from .examples import hello_sequence
    from .flow import gradient_flow
    from .plots import plot_contributions, plot_gradient_flow, plot_step_grads
    from .truncation import truncation_bias

    if args.repeats < 1 or args.hidden < 1:
        raise UsageError(f"--repeats and --hidden must be ≥ 1, got {args.repeats} and {args.hidden}")
    if args.init_scale is not None and not (np.isfinite(args.init_scale) and args.init_scale > 0):
        raise UsageError(f"--init-scale must be a positive number, got {args.init_scale}")
    if args.truncate is not None and args.truncate < 1:
        raise UsageError(f"--truncate must be ≥ 1, got {args.truncate}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: exists and is not a directory")

    model, xs, targets, _ = hello_sequence(args.repeats, args.hidden, args.init_scale, args.nonlinearity,
                                           args.seed)
    L, out = model.loss(xs, targets)
    L.backward()
    scale = "nn.RNN's default W" if args.init_scale is None else f"W = {args.init_scale:g}·Q (Q orthogonal)"
    print(f'analyze: "hello" × {args.repeats} (T = {out.T}), d = {args.hidden}, {args.nonlinearity}, '
          f"{scale}, L = {L.item():.4f}")
    flow = gradient_flow(out)
    print(flow.summary())
    norms = contribution_norms(out, model.W)
    back = np.subtract.outer(np.arange(out.T), np.arange(out.T))  # t − k
    near, far = norms[(back >= 0) & (back < NEAR)].sum(), norms[back >= NEAR].sum()
    print(f"contributions ‖∂L_t/∂W(k)‖: {near / (near + far):.1%} from k > t − {NEAR}, "
          f"{far / (near + far):.1%} from farther back")
    if args.truncate is not None:
        bias = truncation_bias(out, args.truncate)
        print(f"truncated BPTT (k = {args.truncate}): ‖full − truncated‖/‖full‖ = {bias.relative:.3f}, "
              f"cos(full, truncated) = {bias.cosine:.4f}")

    os.makedirs(args.output, exist_ok=True)
    figures = {"contributions": plot_contributions(out), "gradient_flow": plot_gradient_flow(flow),
               "step_grads": plot_step_grads(out)}
    for name, fig in figures.items():
        path = os.path.join(args.output, f"{name}.{args.format}")
        fig.savefig(path, dpi=120)
        print(f"wrote {path}")
    print(f"verdict: {flow.verdict}")
    return 0
