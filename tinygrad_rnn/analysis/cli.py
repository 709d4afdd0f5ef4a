"""`tinygrad-rnn analyze`: contributions, gradient flow and per-step gradients of an example network (any
cell) or of a trained checkpoint, as PNG (or PDF) files plus a short report ending with the verdict;
`--adding T` instead writes the vanishing-gradient figure of the vanilla RNN against the LSTM."""
import os

import numpy as np

from ..cli_checks import int_at_least, non_negative_int, positive_finite, positive_int
from .tasks import PROBE_SEQUENCES, analysis_bytes

NAME = "analyze"
HELP = ("BPTT analysis of an example RNN or a checkpoint: contributions ∂L_t/∂W(k), ‖∂s_t/∂s_k‖ against its "
        "bound, per-step ∂L/∂W(t), a vanishing/exploding verdict; --adding T: ‖∂L_T/∂h_k‖ of rnn vs lstm")
EXAMPLES = ("hello", "deep")
CELLS = ("rnn", "gru", "lstm")
NEAR = 5  # the report splits the contributions into the last NEAR steps and everything farther back


def add_arguments(parser):
    parser.add_argument("--example", default="hello", choices=EXAMPLES,
                        help='the network and sequence: "hello" repeated, or the slides\' "deep" → "eep<stop>" '
                             "(predicting the next character)")
    parser.add_argument("--cell", choices=CELLS, default="rnn", help="recurrent cell of the example (default rnn)")
    parser.add_argument("--load", metavar="CHECKPOINT",
                        help="analyse a character model saved by `tinygrad-rnn train --save` on its own text "
                             "(--text, default the Zen of Python) instead of an example")
    parser.add_argument("--text", metavar="FILE", help="with --load: the text the model was trained on")
    parser.add_argument("--length", type=positive_int, default=50,
                        help="with --load: analyse the first LENGTH characters of the text (default 50)")
    parser.add_argument("--init-scale", type=positive_finite, default=None, metavar="S",
                        help="set W = S·Q with Q random orthogonal, so ‖W‖₂ = S "
                             "(0.5: vanishing, 3.0: exploding); default: nn.RNN's own initialisation")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help='how many times the example\'s word is repeated (default 5 for "hello", T = 24; '
                             '1 for "deep", T = 4 as on the slides)')
    parser.add_argument("--hidden", type=positive_int, default=16, help="hidden size d (default 16)")
    parser.add_argument("--nonlinearity", choices=("tanh", "sigmoid"), default="tanh")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--truncate", type=positive_int, default=None, metavar="K",
                        help="also report the truncation bias of truncated BPTT with segments of K steps")
    parser.add_argument("--adding", type=int_at_least(2), default=None, metavar="T",
                        help="write gradient_vs_gap: ‖∂L_T/∂s_k‖ (LSTM: s = (h, c)) against T − k for the "
                             "vanilla RNN and the LSTM "
                             "on the adding problem of length T, at initialisation and after training")
    parser.add_argument("--train-steps", type=positive_int, default=1500,
                        help="with --adding: Adam updates per cell (default 1500)")
    parser.add_argument("--format", choices=("png", "pdf"), default="png", help="file format of the figures")
    parser.add_argument("-o", "--output", default=os.path.join("out", "analysis"),
                        help="directory for the figures (default out/analysis)")


def _check(args):
    from ..cli_checks import check_fits_in_memory, rnn_training_bytes
    from ..errors import UsageError
    from ..outputs import check_output_folder
    from ..train import GATE_BLOCKS
    if args.init_scale is not None and args.cell != "rnn":
        raise UsageError(f"--init-scale sets the vanilla cell's W; --cell {args.cell} has no W")
    if args.load is not None and not os.path.isfile(args.load):
        raise UsageError(f"--load {args.load}: no such file")
    check_output_folder("-o", args.output)
    if args.adding is not None:  # train_task's batches of 64, then the analysis of 16 sequences per cell
        needed = max(rnn_training_bytes(2, args.hidden, 1, GATE_BLOCKS[cell], args.adding, 64)
                     + analysis_bytes(args.adding, 2, args.hidden, cell, batch=PROBE_SEQUENCES)
                     for cell in ("rnn", "lstm"))
        check_fits_in_memory(f"--adding {args.adding} at --hidden {args.hidden}", needed,
                             "lower --adding or --hidden")
    elif args.load is None:
        T = 5 * _repeats(args) - 1  # the examples' T (examples._sequence)
        check_fits_in_memory(f"the analysis of T = {T} steps (--repeats {_repeats(args)}) at --hidden {args.hidden}",
                             analysis_bytes(T, 4, args.hidden, args.cell), "lower --repeats or --hidden")


def _repeats(args):
    return args.repeats or (5 if args.example == "hello" else 1)


def _save(figures, args):
    from ..outputs import save_figure
    for name, fig in figures.items():
        path = os.path.join(args.output, f"{name}.{args.format}")
        save_figure(fig, path)  # atomically: a failed run leaves the old figure
        print(f"wrote {path}")


def _network(args):
    """(model, xs, targets, description, run) of the example or the checkpoint."""
    from ..errors import UsageError
    from .examples import deep_sequence, hello_sequence
    if args.load is not None:
        from ..nn import CheckpointError
        from ..train import load_char_lm, read_text_argument
        text = read_text_argument("--text", args.text)
        try:
            model, vocab, meta = load_char_lm(args.load)
        except (CheckpointError, OSError, ValueError) as e:
            raise UsageError(str(e)) from None
        window = text[:args.length + 1]
        missing = sorted(set(window) - set(vocab.tokens))
        if len(window) < 2 or missing:
            raise UsageError(f"--load {args.load}: the text does not fit the model's vocabulary "
                             f"(characters {missing} unknown, or fewer than 2 characters)")
        xs, targets = vocab.one_hot(window[:-1], dtype=np.float64), vocab.encode(window[1:])
        from ..cli_checks import check_fits_in_memory
        check_fits_in_memory(f"the analysis of --length {len(xs)} steps of {args.load} (d = {meta['hidden']})",
                             analysis_bytes(len(xs), len(vocab), meta["hidden"], meta["cell"]), "lower --length")
        where = args.text or "the Zen of Python"
        return (model, xs, targets, f"{args.load} ({meta['cell']}, d = {meta['hidden']}) on the first "
                f"{len(xs)} characters of {where}", f"checkpoint {os.path.basename(args.load)}")
    make = hello_sequence if args.example == "hello" else deep_sequence
    repeats = _repeats(args)
    try:
        model, xs, targets, _ = make(repeats, args.hidden, args.init_scale, args.nonlinearity, args.seed,
                                     cell=args.cell)
    except ValueError as e:
        raise UsageError(str(e)) from None
    scale = "nn.RNN's default W" if args.init_scale is None else f"W = {args.init_scale:g}·Q (Q orthogonal)"
    kind = f"{args.nonlinearity}" if args.cell == "rnn" else f"cell {args.cell}"
    word = '"hello"' if args.example == "hello" else '"deep"'
    description = f"{word} × {repeats} (T = {len(xs)}), d = {args.hidden}, {kind}, {scale}"
    run = f"{word} × {repeats}, " + ("default init" if args.init_scale is None else f"W = {args.init_scale:g}·Q")
    return model, xs, targets, description, run


def _deep_tables(model, out):
    """The slide's table as a computed loss, then the same table for this network's own predictions."""
    from .examples import DEEP_SLIDE_PREDICTED, DEEP_SLIDE_TRUE, DEEP_VOCAB, probability_table, slide_loss
    L, _ = slide_loss()
    print(probability_table(DEEP_SLIDE_PREDICTED, DEEP_SLIDE_TRUE, title="the slide's table (predicted / true)"))
    print(f"slide: L = Σ_t −log y_tc = {L:.4f} (the engine, on the slide's numbers)")
    if out.T == 4:
        logits = np.stack([y.data for y in out.logits]).astype(np.float64)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        true = [DEEP_VOCAB[i] for i in out.targets]
        print(probability_table(p, true, title="this network at initialisation (softmax(y_t) / true)"))


def _adding(args):
    """Train rnn and lstm on the adding problem; ‖∂L_T/∂h_k‖ against T − k before and after."""
    from ..train import task_model, train_task
    from .tasks import describe, gap_curves, plot_task_gaps
    T, runs = args.adding, []
    for cell in ("rnn", "lstm"):
        trained, history = train_task("adding", T, cell, args.hidden, args.train_steps, seed=args.seed,
                                      progress=False)
        runs += [(f"{cell} at init", task_model("adding", cell, args.hidden, args.seed)),
                 (f"{cell} after {args.train_steps} updates", trained)]
        print(f"  {cell}: training MSE {history.final():.4f} (always answering 1: 0.167)")
    curves = gap_curves("adding", T, runs, args.seed)
    for line in describe(curves):
        print(f"adding T = {T}, {line}")
    _save({"gradient_vs_gap": plot_task_gaps("adding", T, curves, args.hidden, args.train_steps)}, args)
    return 0


def run(args):
    _check(args)
    if args.adding is not None:
        return _adding(args)
    from .contributions import contribution_norms
    from .flow import gradient_flow
    from .jacobians import recurrent_weight
    from .plots import plot_contributions, plot_gradient_flow, plot_step_grads
    from .recording import recording
    from .truncation import truncation_bias

    model, xs, targets, description, run_name = _network(args)
    L, out = model.loss(xs, targets)
    L.backward()
    print(f"analyze: {description}, L = {L.item():.4f}")
    if args.example == "deep" and args.load is None:
        _deep_tables(model, out)
    rec = recording(out)
    weight = recurrent_weight(rec)
    flow = gradient_flow(rec)
    print(flow.summary())
    norms = contribution_norms(rec, weight)
    back = np.subtract.outer(np.arange(out.T), np.arange(out.T))  # t − k
    near, far = norms[(back >= 0) & (back < NEAR)].sum(), norms[back >= NEAR].sum()
    if near + far > 0:
        print(f"contributions ‖∂L_t/∂{weight}(k)‖: {near / (near + far):.1%} from k > t − {NEAR}, "
              f"{far / (near + far):.1%} from farther back")
    if args.truncate is not None:
        bias = truncation_bias(rec, args.truncate)
        print(f"truncated BPTT (k = {args.truncate}): ‖full − truncated‖/‖full‖ = {bias.relative:.3f}, "
              f"cos(full, truncated) = {bias.cosine:.4f}")
    _save({"contributions": plot_contributions(rec, run=run_name),
           "gradient_flow": plot_gradient_flow(flow, run=run_name),
           "step_grads": plot_step_grads(rec, run=run_name)}, args)
    print(f"verdict: {flow.verdict}")
    return 0
