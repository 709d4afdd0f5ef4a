"""`tinygrad-rnn render`: draw the lecture's example networks to PDF/SVG/PNG/DOT.

Every input is checked before the network is built: numbers by argparse types naming the flag, the output
path (a writable file whose suffix, or --format, gives the format), Graphviz's presence, and the size of the
unrolled graph (a huge --steps is refused with its memory estimate). The file is written atomically
(tinygrad_rnn.outputs.atomic_path): a failing render leaves the old file, and a symlink given as -o is
replaced, its target left alone."""
import argparse
import os

from tinygrad_rnn.cli_checks import (check_fits_in_memory, non_negative_int, positive_int,
                                     rnn_training_bytes)

NAME = "render"
HELP = "render the unrolled, rolled or op graph of the hello/deep example RNN with Graphviz"

SUFFIXES = ("pdf", "svg", "png", "dot", "gv")  # .gv is Graphviz's other name for DOT source
VOCABULARY = 4  # both examples: [h, e, l, o] and [d, e, p, <stop>]
# Python objects of one recorded, backpropagated step of the example RNN beside its arrays: 6.5-7.5 KB
# measured with tracemalloc (hello, d = 3-64, T = 1,000-4,000).
RECORDED_STEP_BYTES = 8_000
# Recording and backpropagating a step took 0.43 ms and laying the folded drawing out 0.18 ms (hello, d = 3,
# T = 4,000, a busy 2-core machine): 100,000 steps are about a minute, and the drawing folds all but
# --max-steps of them anyway.
MAX_STEPS = 100_000
SECONDS_PER_STEP = 6e-4


def max_steps_type(text):
    """An argparse type for --max-steps: 0 (draw every step) or an integer ≥ 2 (the first and last steps
    are always drawn)."""
    value = non_negative_int(text)
    if value == 1:
        raise argparse.ArgumentTypeError("expected 0 (draw all) or an integer ≥ 2, got 1")
    return value


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
    # --steps' upper end is checked in run(): it comes with an estimate of the time and memory
    parser.add_argument("--steps", type=positive_int, help="sequence length T: the example's text repeats "
                        f"(default: the 4 steps of the slides; at most {MAX_STEPS:,})")
    parser.add_argument("--max-steps", type=max_steps_type, default=DEFAULT_MAX_STEPS,
                        help=f"draw at most this many steps, folding the middle "
                        f"(default {DEFAULT_MAX_STEPS}; 0 draws all)")
    parser.add_argument("--no-grads", action="store_true", help="draw the forward graph only (no backward, "
                        "no gradient colours)")
    parser.add_argument("--hidden", type=positive_int, default=3, help="hidden size d (default 3)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--sigma", nargs="+", metavar="NAME", help="draw Σ edges only into these shared "
                        "parameters (e.g. --sigma W); default all")
    parser.add_argument("--rankdir", choices=("BT", "TB", "LR", "RL"), help="Graphviz direction (default BT)")


def output_format(path, format):
    """The format `path` is written in: --format, else its suffix (checked by check_output_file); UsageError
    when they disagree."""
    from tinygrad_rnn.errors import UsageError

    from .render import FORMATS
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    suffix = "dot" if suffix == "gv" else suffix
    if format and suffix in FORMATS and suffix != format:
        raise UsageError(f"--format {format} does not match the suffix of {path!r}")
    return format or suffix


def check_steps(steps, hidden, example="hello"):
    """UsageError for a --steps (≥ 1 already, positive_int) beyond MAX_STEPS, or whose graph cannot fit in
    memory — before the network is built."""
    from tinygrad_rnn.errors import UsageError
    if steps is None:
        steps = 4
    needed = rnn_training_bytes(VOCABULARY, hidden, VOCABULARY, 1, steps, 1) + steps * RECORDED_STEP_BYTES
    check_fits_in_memory(f"unrolling the {example} RNN (--hidden {hidden}) over --steps {steps}", needed,
                         "lower --steps or --hidden")
    if steps > MAX_STEPS:
        raise UsageError(f"--steps {steps}: recording, backpropagating and drawing {steps:,} steps takes about "
                         f"{steps * SECONDS_PER_STEP / 60:,.0f} min; use --steps ≤ {MAX_STEPS:,} (the drawing "
                         "folds all but --max-steps of them anyway)")


def check_graphviz(fmt):
    """GraphvizNotFound (with install instructions) when `fmt` needs Graphviz's `dot` and it is missing."""
    if fmt == "dot":
        return
    import graphviz

    from .render import INSTALL_HINT, GraphvizNotFound
    try:
        graphviz.version()  # runs `dot -V`
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFound(f"cannot render {fmt.upper()}: Graphviz's `dot` program was not found on "
                               f"PATH. {INSTALL_HINT}") from None


def run(args):
    import sys

    from tinygrad_rnn.outputs import atomic_path, check_output_file

    from .examples import example, title, tokens
    from .render import GraphvizNotFound, render

    path = args.output or os.path.join("out", f"{args.example}-{args.view}.{args.format or 'pdf'}")
    check_output_file("-o", path, None if args.format else SUFFIXES)  # a folder, a bad suffix, no write access
    fmt = output_format(path, args.format)
    check_steps(args.steps, args.hidden, args.example)
    try:
        check_graphviz(fmt)
    except GraphvizNotFound as e:  # the machine lacks a program: not bad input, so exit code 1
        print(f"tinygrad-rnn render: error: {e} (the DOT source works without Graphviz: tinygrad-rnn render "
              f"... -o {os.path.splitext(path)[0]}.dot)", file=sys.stderr)
        return 1
    L, out = example(args.example, steps=args.steps, hidden=args.hidden, seed=args.seed,
                     backward=not args.no_grads)
    folds = args.max_steps and out.T > args.max_steps  # then the default caption names the folded steps
    inputs, targets = tokens(args.example, args.steps)
    with atomic_path(path) as tmp:
        try:
            render(L, tmp, view=args.view, format=fmt, max_steps=args.max_steps or None, rankdir=args.rankdir,
                   title=None if folds else title(args.example, args.view, out.T), inputs=inputs,
                   targets=targets, sigma=args.sigma)
        except RuntimeError as e:  # Graphviz failed (one line, exit 2): name the target, not the temporary file
            raise OSError(str(e).replace(tmp, path)) from None
    print(f"wrote {path}: the {args.view} view of the {args.example} network, T = {out.T} steps"
          + ("" if args.no_grads or args.view == "rolled" else ", coloured by gradient norm after backward"))
    return 0
