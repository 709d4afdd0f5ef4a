"""`tinygrad-rnn render`: draw the lecture's example networks to PDF/SVG/PNG/DOT."""
import os

NAME = "render"
HELP = "render the unrolled, rolled or op graph of the hello/deep example RNN with Graphviz"


def add_arguments(parser):
    from .examples import EXAMPLES
    from .render import FORMATS
    from .view import DEFAULT_MAX_STEPS, VIEWS
    parser.add_argument("--example", choices=EXAMPLES, default="hello",
                        help='"hello": hell -> ello over [h,e,l,o] (default); "deep": deep -> eep<stop>')
    parser.add_argument("--view", choices=VIEWS, default="unrolled", help="what to draw (default unrolled)")
    parser.add_argument("-o", "--output", help="output file; the suffix gives the format "
                        "(default out/<example>-<view>.pdf)")
    parser.add_argument("--format", choices=FORMATS, help="output format when the suffix does not say it")
    parser.add_argument("--steps", type=int, help="sequence length T: the example's text repeats "
                        "(default: the 4 steps of the slides)")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                        help=f"draw at most this many steps, folding the middle "
                        f"(default {DEFAULT_MAX_STEPS}; 0 draws all)")
    parser.add_argument("--no-grads", action="store_true", help="draw the forward graph only (no backward, "
                        "no gradient colours)")
    parser.add_argument("--hidden", type=int, default=3, help="hidden size d (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", nargs="+", metavar="NAME", help="draw Σ edges only into these shared "
                        "parameters (e.g. --sigma W); default all")
    parser.add_argument("--rankdir", choices=("BT", "TB", "LR", "RL"), help="Graphviz direction (default BT)")


def run(args):
    import sys

    from tinygrad_rnn.errors import UsageError

    from .examples import example, title, tokens
    from .render import FORMATS, GraphvizNotFound, render

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.max_steps < 0 or args.max_steps == 1:
        raise UsageError(f"--max-steps must be 0 (draw all) or at least 2, got {args.max_steps}")
    if args.hidden < 1:
        raise UsageError(f"--hidden must be at least 1, got {args.hidden}")
    path = args.output or os.path.join("out", f"{args.example}-{args.view}.{args.format or 'pdf'}")
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    fmt = args.format or ("dot" if suffix == "gv" else suffix)
    if args.format and suffix in FORMATS and suffix != args.format:
        raise UsageError(f"--format {args.format} does not match the suffix of {path!r}")
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the format of {path!r}: end it in .pdf, .svg, .png or .dot, "
                         "or pass --format")
    L, out = example(args.example, steps=args.steps, hidden=args.hidden, seed=args.seed,
                     backward=not args.no_grads)
    folds = args.max_steps and out.T > args.max_steps  # then the default caption names the folded steps
    try:
        inputs, targets = tokens(args.example, args.steps)
        render(L, path, view=args.view, format=fmt, max_steps=args.max_steps or None, rankdir=args.rankdir,
               title=None if folds else title(args.example, args.view, out.T), inputs=inputs, targets=targets,
               sigma=args.sigma)
    except GraphvizNotFound as e:
        print(f"tinygrad-rnn render: error: {e}", file=sys.stderr)
        print(f"  (the DOT source works without Graphviz: tinygrad-rnn render ... -o "
              f"{os.path.splitext(path)[0]}.dot)", file=sys.stderr)
        return 1
    print(f"wrote {path}: the {args.view} view of the {args.example} network, T = {out.T} steps"
          + ("" if args.no_grads or args.view == "rolled" else ", coloured by gradient norm after backward"))
    return 0
