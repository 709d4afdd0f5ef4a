"""Training: a loop with a tqdm progress bar and a loss history, the character-level language model, the
long-range tasks (adding problem, copy task), sampling, loss-curve plots, and the CLI subcommands
`train`, `sample` and `task`.

    tinygrad-rnn train --cell lstm --hidden 128 --seq 50 --steps 1000 --save zen.npz
    tinygrad-rnn sample --load zen.npz --prime "Beautiful" --n 200
    tinygrad-rnn task adding --T 50 --cell rnn lstm --plot adding.png --analyze adding-gradient-vs-gap.png
"""
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from . import nn
from .cli_checks import (check_fits_in_memory, check_text_file, non_negative_finite, non_negative_int,
                         positive_finite, positive_int, rnn_training_bytes)
from .data import CharVocab, adding_problem, copy_task, load_text, unigram_entropy, windows
from .errors import UsageError
from .nn.architectures import generate
from .nn.cells import CELLS, NONLINEARITIES
from .nn.checkpoint import read_checkpoint
from .optim import Adam, clip_grad_norm
from .outputs import check_distinct, check_output_file, make_folder_for, save_figure

GATE_BLOCKS = {"rnn": 1, "gru": 3, "lstm": 4}  # blocks of hidden-size columns in a cell's weights


@dataclass(eq=False)  # holds arrays or Tensors (elementwise ==): compare by identity
class History:
    """What a training run measured: the loss after every update, wall time, tokens processed."""
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0
    label: str = ""

    @property
    def tokens_per_second(self):
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def final(self, last=50):
        """Mean of the last `last` losses (one batch is noisy)."""
        return float(np.mean(self.losses[-last:])) if self.losses else float("nan")


def _progress_bar(steps, desc):
    """A tqdm bar over range(steps): tqdm.auto picks the widget bar in Jupyter when ipywidgets is there and
    the text bar otherwise; both fallbacks warn (TqdmWarning), which says nothing a user must act on."""
    import warnings

    from tqdm import TqdmWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm(range(steps), desc=desc, mininterval=0.5, leave=False, dynamic_ncols=True)


def train_loop(update, steps, tokens_per_step=0, desc="train", progress=True, label=""):
    """Call `update()` (one optimizer step, returning the loss as a float, or (loss, tokens it used) when
    that varies) `steps` times, under a tqdm bar showing the smoothed loss and tokens/s when `progress`
    (no bar at all otherwise); returns the History."""
    history = History(label=label)
    smooth = None
    start = time.perf_counter()
    bar = _progress_bar(steps, desc) if progress else None
    try:
        for i in bar if bar is not None else range(steps):
            loss = update()
            loss, tokens = loss if isinstance(loss, tuple) else (loss, tokens_per_step)
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"{desc}: the loss became {loss} at update {i + 1}; lower the "
                                         "learning rate or clip gradients harder")
            history.losses.append(loss)
            history.tokens += tokens
            smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
            if bar is not None and (i % 10 == 0 or i == steps - 1):
                rate = history.tokens / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{smooth:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    history.seconds = time.perf_counter() - start
    return history


# --- the character-level language model ------------------------------------------------------------------

def _detached(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _final_state(out):
    h = out.states[-1]
    return (h, out.cell_states[-1]) if out.cell_states else h


def train_char_lm(text=None, cell="rnn", hidden=128, seq=50, bptt=None, batch=32, epochs=None, lr=3e-3,
                  clip=5.0, seed=0, max_steps=1000, progress=True):
    """Train nn.RNN(cell=cell) as a character-level language model on `text` (default: the Zen of Python).

    Each batch holds `batch` windows of `seq` characters (data.windows); with bptt = K < seq, every window
    is processed in segments of K steps, the state carried forward detached (truncated BPTT) and one Adam
    update per segment. Training stops after `epochs` passes over the text or `max_steps` updates, whichever
    comes first (None: no limit of that kind). The loss is the mean cross-entropy per character (nats).
    Returns (model, vocab, history).
    """
    text = load_text() if text is None else text
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    bptt = seq if bptt is None else bptt
    if not 1 <= bptt <= seq:
        raise ValueError(f"train_char_lm: bptt must be in [1, seq = {seq}], got {bptt}")
    model = nn.RNN(len(vocab), hidden, len(vocab), cell=cell, seed=seed)
    optimizer = Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    eye = np.eye(len(vocab), dtype=model.dtype)
    segments_per_window = -(-seq // bptt)
    if epochs is None and max_steps is None:
        raise ValueError("train_char_lm: give epochs or max_steps (or both)")
    per_epoch = sum(1 for _ in windows(ids, seq, batch, np.random.default_rng(0)))
    steps = min(n for n in (max_steps, None if epochs is None else epochs * per_epoch * segments_per_window)
                if n is not None)

    def segments():
        while True:
            for inputs, targets in windows(ids, seq, batch, rng):
                for k in range(0, seq, bptt):  # a window starts from zeros; its segments carry the state
                    yield inputs[k:k + bptt], targets[k:k + bptt], k == 0

    feed = segments()
    carried = {"state": None}

    def update():
        inputs, targets, fresh = next(feed)
        s0 = None if fresh else carried["state"]
        L, out = model.loss(eye[inputs], targets, s0=s0)
        loss = L * (1.0 / targets.size)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            clip_grad_norm(optimizer.params, clip)
        optimizer.step()
        carried["state"] = _detached(_final_state(out))
        return loss.item(), targets.size  # the last segment of a window may be shorter than bptt

    history = train_loop(update, steps, progress=progress,
                         desc=f"train {cell} d={hidden}", label=cell)
    return model, vocab, history


def sample(model, vocab, prime, n=200, temperature=1.0, seed=None):
    """prime + n characters sampled from the model (one-to-many generation, see nn.architectures.generate)."""
    missing = sorted(set(prime) - set(vocab.tokens))
    if missing:
        raise ValueError(f"sample: the prime {prime!r} has characters not in the model's vocabulary: "
                         f"{missing}")
    return prime + vocab.decode(generate(model, vocab.encode(prime), n, temperature, seed))


def save_char_lm(path, model, vocab, history=None):
    metadata = {"kind": "char_lm", "cell": model.cell_type, "hidden": model.hidden_size,
                "nonlinearity": model.nonlinearity, "vocab": vocab.tokens}
    if history is not None:
        metadata.update(loss=history.final(), updates=len(history.losses))
    return model.save(path, metadata=metadata)


# nn.RNN's parameter shapes are read off a tiny probe model whose three sizes are distinct primes: every
# dimension of a parameter is the input size, the output size or a multiple g·hidden (g gate blocks)
_PROBE_IN, _PROBE_HIDDEN, _PROBE_OUT = 7, 11, 13


def char_lm_shapes(vocab_size, hidden, cell="rnn", nonlinearity="tanh"):
    """{parameter name: shape} of nn.RNN(vocab_size, hidden, vocab_size, cell=cell), without allocating it."""
    probe = nn.RNN(_PROBE_IN, _PROBE_HIDDEN, _PROBE_OUT, nonlinearity=nonlinearity, cell=cell)

    def scaled(size):
        if size in (_PROBE_IN, _PROBE_OUT):
            return vocab_size
        assert size % _PROBE_HIDDEN == 0, f"char_lm_shapes: nn.RNN has a dimension {size} of no known size"
        return size // _PROBE_HIDDEN * hidden
    return {name: tuple(scaled(n) for n in p.shape) for name, p in probe.named_parameters()}


def _char_lm_metadata_problem(meta):
    """Why the metadata `meta` describes no character model of `tinygrad-rnn train`, or None."""
    needed = ("vocab", "hidden", "cell", "nonlinearity")
    if not isinstance(meta, dict) or meta.get("kind") != "char_lm" or any(k not in meta for k in needed):
        return "it is not a character-model checkpoint of `tinygrad-rnn train` (its metadata is missing or incomplete)"
    hidden, vocab = meta["hidden"], meta["vocab"]
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        return f"its metadata says hidden = {hidden!r}, not a positive integer"
    if meta["cell"] not in CELLS or meta["nonlinearity"] not in NONLINEARITIES:
        return f"its metadata names an unknown cell {meta['cell']!r} or nonlinearity {meta['nonlinearity']!r}"
    if not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) for t in vocab) \
            or len(set(vocab)) != len(vocab):
        return "its metadata's vocabulary is not a list of distinct strings"
    return None


def load_char_lm(path):
    """(model, vocab, metadata) from a checkpoint written by `tinygrad-rnn train --save`. The metadata and the
    arrays' shapes (read from the .npz headers) are checked before the model is built: a metadata saying
    hidden = 10**6 is refused without allocating anything."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint.metadata
    problem = _char_lm_metadata_problem(meta)
    if problem:
        raise nn.CheckpointError(f"load: {os.fspath(path)!r}: {problem}")
    vocab = CharVocab(meta["vocab"])
    shapes = char_lm_shapes(len(vocab), meta["hidden"], meta["cell"], meta["nonlinearity"])
    checkpoint.check_shapes(shapes, what=f"the {meta['cell']} model of hidden size {meta['hidden']} its "
                            "metadata describes")
    model = nn.RNN(len(vocab), meta["hidden"], len(vocab), nonlinearity=meta["nonlinearity"], cell=meta["cell"])
    model.load_state_dict(checkpoint.read_arrays(list(shapes)))
    return model, vocab, meta


# --- long-range tasks ---------------------------------------------------------------------------------

TASKS = ("adding", "copy")


def task_baseline(task, T, n_symbols=8, length=10):
    """The loss of the best memoryless guess: 1/6 for the adding problem (always answer 1), and for the copy
    task blanks everywhere plus a uniform guess over the symbols to recall."""
    if task == "adding":
        return 1 / 6
    return length * np.log(n_symbols) / (T + 2 * length)


def task_model(task, cell="lstm", hidden=64, seed=0):
    """The untrained model train_task starts from: a many-to-one SequenceClassifier (2 inputs, 1 output)
    for the adding problem, a SequenceTagger over 10 ids for the copy task."""
    if task not in TASKS:
        raise ValueError(f"task_model: task must be one of {TASKS}, got {task!r}")
    if task == "adding":
        return nn.SequenceClassifier(2, hidden, 1, cell=cell, seed=seed)
    return nn.SequenceTagger(10, 10, hidden, 10, cell=cell, seed=seed)


def train_task(task="adding", T=50, cell="lstm", hidden=64, steps=1500, batch=64, lr=1e-2, clip=1.0, seed=0,
               progress=True):
    """Train a model on a freshly generated batch at every update (so the training loss is also the test
    loss): the adding problem with a many-to-one SequenceClassifier (mean squared error), or the copy task
    with a many-to-many SequenceTagger (mean cross-entropy). Returns (model, history)."""
    if task not in TASKS:
        raise ValueError(f"train_task: task must be one of {TASKS}, got {task!r}")
    rng = np.random.default_rng(seed)
    model = task_model(task, cell, hidden, seed)
    if task == "adding":
        def loss_fn():
            xs, targets = adding_problem(T, batch, rng)
            return model.loss(xs, targets, kind="regression")[0]
        tokens = T * batch
    else:
        def loss_fn():
            inputs, targets = copy_task(T, batch, rng=rng)
            return model.loss(inputs, targets)[0]
        tokens = (T + 20) * batch
    optimizer = Adam(model.parameters(), lr=lr)

    def update():
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        if clip:
            clip_grad_norm(optimizer.params, clip)
        optimizer.step()
        return loss.item()

    history = train_loop(update, steps, tokens, desc=f"{task} T={T} {cell}", progress=progress, label=cell)
    return model, history


# --- plots --------------------------------------------------------------------------------------------

def moving_average(values, window):
    values = np.asarray(values, dtype=np.float64)
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_losses(histories, path=None, title="", ylabel="loss", baseline=None, baseline_label="baseline"):
    """The loss curves of `histories` (raw, faint, and a moving average) as a matplotlib Figure, or, given
    `path`, written to that PNG/PDF (then the path is returned). Built without pyplot, so it changes no
    backend, and the Figure shows in a notebook as the cell's value (a PNG, with no %matplotlib magic)."""
    from .analysis.plots import inline_figure  # on use, as the --analyze path imports analysis.tasks
    fig = inline_figure((7, 4))
    ax = fig.add_subplot()
    for h in histories:
        steps = np.arange(1, len(h.losses) + 1)
        window = max(1, len(h.losses) // 50)
        line, = ax.plot(steps, h.losses, alpha=0.25, linewidth=0.8)
        smooth = moving_average(h.losses, window)
        ax.plot(steps[window - 1:], smooth, color=line.get_color(),
                label=f"{h.label} (final {h.final():.3g}, {h.tokens_per_second:,.0f} tok/s)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"{baseline_label} {baseline:.3f}")
    if all(min(h.losses, default=1) > 0 for h in histories):
        ax.set_yscale("log")  # a loss that falls by orders of magnitude stays readable, spikes stay small
    ax.set_xlabel("update")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    if path is None:
        return fig
    save_figure(fig, path)  # atomically: a failed write leaves the old file
    return path


# --- CLI ----------------------------------------------------------------------------------------------

# Measured on a 2-core machine that other processes kept busy (load 1-2): `train --save zen.npz` took 11.3 s
# with one BLAS thread and 45.4 s with two; 200 updates of `task adding --T 50 --cell lstm` 5.4 s and 55.1 s.
# At these matrix sizes OpenBLAS threads spin waiting on each other, so one thread is the default.
DEFAULT_BLAS_THREADS = 1


def _blas_threads(n):
    """A context limiting numpy's BLAS to n threads (0: leave BLAS as it is, numpy's default of all cores)."""
    import contextlib

    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n, user_api="blas") if n else contextlib.nullcontext()


def _add_threads_argument(p):
    p.add_argument("--threads", type=non_negative_int, default=DEFAULT_BLAS_THREADS,
                   help=f"numpy's BLAS threads (default {DEFAULT_BLAS_THREADS}: faster at these sizes, above all "
                   "on a busy machine; 0: BLAS's own default)")


def plot_suffixes():
    """The file suffixes matplotlib can write a figure to: png, pdf, svg first, then the others it knows."""
    from matplotlib.figure import Figure
    usual = ("png", "pdf", "svg")
    return usual + tuple(sorted(set(Figure().canvas.get_supported_filetypes()) - set(usual)))


def read_text_argument(flag, path):
    """The text of the file given with `flag` (default: the Zen of Python), checked to be a regular file
    of a sane size first; a decoding error names the file."""
    check_text_file(flag, path)
    try:
        return load_text(path)
    except UnicodeDecodeError as e:
        raise UsageError(f"{flag} {path}: cannot be decoded as utf-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:
        raise UsageError(f"{flag} {path}: {e}") from None


def _add_train_arguments(p):
    p.add_argument("--text", metavar="FILE", help="UTF-8 text to learn (default: the Zen of Python)")
    p.add_argument("--cell", choices=list(CELLS), default="rnn", help="recurrent cell (default rnn)")
    p.add_argument("--hidden", type=positive_int, default=128, help="hidden size (default 128)")
    p.add_argument("--seq", type=positive_int, default=50, help="characters per training window (default 50)")
    p.add_argument("--bptt", type=positive_int, metavar="K",
                   help="truncate backpropagation to K steps (default: --seq)")
    p.add_argument("--batch", type=positive_int, default=32, help="windows per batch (default 32)")
    p.add_argument("--epochs", type=positive_int, help="passes over the text (default: until --steps)")
    p.add_argument("--steps", type=positive_int, help="stop after this many updates (default 1000 when --epochs is "
                   "not given; on the Zen of Python one epoch is one update)")
    p.add_argument("--lr", type=positive_finite, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--clip", type=non_negative_finite, default=5.0,
                   help="clip the gradient norm (0: off; default 5)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--save", metavar="CKPT", help="write the trained model to this .npz checkpoint")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve here, .png/.pdf/.svg (default: beside "
                   "--save)")
    _add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# numpy's overflow warnings would print several lines per op; a loss that becomes non-finite is reported
# instead, in one line naming the update (train_loop)
_QUIET_FLOATING_POINT = dict(over="ignore", invalid="ignore", divide="ignore")


def _run_train(args):
    with _blas_threads(args.threads), np.errstate(**_QUIET_FLOATING_POINT):
        return _train(args)


def _train(args):
    # every output is checked before any work: a run that fails later has written nothing
    if args.bptt is not None and args.bptt > args.seq:
        raise UsageError(f"--bptt {args.bptt} must not exceed --seq {args.seq}")
    plot = args.plot or (os.path.splitext(args.save)[0] + ".png" if args.save else None)
    check_output_file("--save", args.save, ("npz",))
    check_output_file("--plot", plot, plot_suffixes())
    check_distinct(("--text", args.text), ("--save", args.save), ("--plot", plot))
    text = read_text_argument("--text", args.text)
    if len(text) < args.seq + 1:
        raise UsageError(f"the text has {len(text)} characters; --seq {args.seq} needs at least {args.seq + 1}")
    vocab_size = len(set(text))
    needed = rnn_training_bytes(vocab_size, args.hidden, vocab_size, GATE_BLOCKS[args.cell], args.bptt or args.seq,
                                args.batch)
    check_fits_in_memory(f"training a {args.cell} of --hidden {args.hidden} on --batch {args.batch} windows of "
                         f"{args.bptt or args.seq} characters", needed + 24 * len(text),
                         "lower --hidden, --batch or --seq/--bptt")
    source = args.text or "the Zen of Python"
    entropy = unigram_entropy(CharVocab.from_text(text).encode(text))
    print(f"Training a {args.cell} language model (hidden {args.hidden}) on {source}: {len(text)} "
          f"characters, {vocab_size} distinct; unigram entropy {entropy:.3f} nats/char")
    steps = args.steps if args.steps is not None or args.epochs is not None else 1000
    model, vocab, history = train_char_lm(text, args.cell, args.hidden, args.seq, args.bptt, args.batch,
                                          args.epochs, args.lr, args.clip, args.seed, steps,
                                          not args.no_progress)
    print(f"loss {history.final():.3f} nats/char (unigram entropy {entropy:.3f}) after {len(history.losses)} "
          f"updates in {history.seconds:.1f} s, {history.tokens_per_second:,.0f} tokens/s")
    prime = text[0]
    print("sample:", repr(sample(model, vocab, prime, 200, temperature=0.7, seed=args.seed)))
    if args.save:
        save_char_lm(make_folder_for(args.save), model, vocab, history)
        print(f"saved {args.save}")
    if plot:
        plot_losses([history], plot, title=f"char LM on {source}", ylabel="cross-entropy (nats/char)",
                    baseline=entropy, baseline_label="unigram entropy")
        print(f"wrote {plot}")
    return 0


def _add_sample_arguments(p):
    p.add_argument("--load", metavar="CKPT", required=True, help="checkpoint written by `train --save`")
    p.add_argument("--prime", default="Beautiful", help='text to start from (default "Beautiful")')
    p.add_argument("--n", type=non_negative_int, default=200, help="characters to generate (default 200)")
    p.add_argument("--temperature", type=non_negative_finite, default=0.7,
                   help="sampling temperature (0: greedy; default 0.7)")
    p.add_argument("--seed", type=non_negative_int)


def _run_sample(args):
    if not args.prime:
        raise UsageError("--prime must not be empty")
    try:
        model, vocab, _ = load_char_lm(args.load)
    except (nn.CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from e
    try:
        print(sample(model, vocab, args.prime, args.n, args.temperature, args.seed))
    except ValueError as e:
        raise UsageError(str(e)) from e
    return 0


def _add_task_arguments(p):
    p.add_argument("task", choices=TASKS,
                   help="adding: the adding problem (many-to-one); copy: the copy task")
    p.add_argument("--T", type=positive_int, default=50, help="sequence length / delay (default 50)")
    p.add_argument("--cell", choices=list(CELLS), nargs="+", default=["lstm"],
                   help="one or more cells to train and compare (default lstm)")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden size (default 64)")
    p.add_argument("--steps", type=positive_int, default=1500, help="updates (default 1500)")
    p.add_argument("--batch", type=positive_int, default=64, help="sequences per batch (default 64)")
    p.add_argument("--lr", type=positive_finite, default=1e-2, help="Adam learning rate (default 1e-2)")
    p.add_argument("--clip", type=non_negative_finite, default=1.0,
                   help="clip the gradient norm (0: off; default 1)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--plot", metavar="PNG", help="write the loss curves here (.png/.pdf/.svg)")
    p.add_argument("--analyze", metavar="PNG", nargs="?", const=os.path.join("out", "{task}-gradient-vs-gap.png"),
                   help="also write one figure of ‖∂L_T/∂s_k‖ against the gap T − k for every cell, at "
                   "initialisation and after training (default out/TASK-gradient-vs-gap.png)")
    _add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_task(args):
    with _blas_threads(args.threads), np.errstate(**_QUIET_FLOATING_POINT):
        return _task(args)


def _task(args):
    if args.task == "adding" and args.T < 2:
        raise UsageError(f"the adding problem needs --T ≥ 2, got {args.T}")
    analyze = args.analyze.format(task=args.task) if args.analyze else None
    check_output_file("--plot", args.plot, plot_suffixes())
    check_output_file("--analyze", analyze, plot_suffixes())
    check_distinct(("--plot", args.plot), ("--analyze", analyze))
    # the copy task: 10 symbol ids embedded in 10 dimensions, T + 20 steps (train_task's models)
    n_in, n_out, steps = (2, 1, args.T) if args.task == "adding" else (10, 10, args.T + 20)
    needed = max(rnn_training_bytes(n_in, args.hidden, n_out, GATE_BLOCKS[cell], steps, args.batch)
                 + (_analysis_bytes(steps, n_in, args.hidden, cell) if analyze else 0) for cell in args.cell)
    check_fits_in_memory(f"the {args.task} task at --T {args.T}, --hidden {args.hidden}, --batch {args.batch}",
                         needed, "lower --T, --hidden or --batch")
    baseline = task_baseline(args.task, args.T)
    metric = "mean squared error" if args.task == "adding" else "cross-entropy (nats/step)"
    print(f"{args.task} task, T = {args.T}: {metric}; a memoryless guess scores {baseline:.4f}")
    histories, runs = [], []
    for cell in dict.fromkeys(args.cell):
        trained, history = train_task(args.task, args.T, cell, args.hidden, args.steps, args.batch, args.lr,
                                      args.clip, args.seed, not args.no_progress)
        print(f"  {cell:4s}: loss {history.final():.4f} after {len(history.losses)} updates in "
              f"{history.seconds:.1f} s ({history.tokens_per_second:,.0f} tokens/s)")
        histories.append(history)
        runs += [(f"{cell} at init", task_model(args.task, cell, args.hidden, args.seed)),
                 (f"{cell} after {len(history.losses)} updates", trained)]
    if args.plot:
        plot_losses(histories, args.plot, title=f"{args.task} problem, T = {args.T}", ylabel=metric,
                    baseline=baseline, baseline_label="memoryless guess")
        print(f"wrote {args.plot}")
    if analyze:
        from .analysis.tasks import describe, gap_curves, plot_task_gaps
        curves = gap_curves(args.task, args.T, runs, args.seed)
        for line in describe(curves):
            print(f"  {line}")
        save_figure(plot_task_gaps(args.task, args.T, curves, args.hidden, args.steps), make_folder_for(analyze))
        print(f"wrote {analyze}")
    return 0


def _analysis_bytes(steps, n_in, hidden, cell):
    """Memory of the --analyze figure's analysis: PROBE_SEQUENCES sequences per model."""
    from .analysis.tasks import PROBE_SEQUENCES, analysis_bytes
    return analysis_bytes(steps, n_in, hidden, cell, batch=PROBE_SEQUENCES)


COMMANDS = [
    SimpleNamespace(NAME="train", HELP="train a character-level language model (default: the Zen of Python)",
                    add_arguments=_add_train_arguments, run=_run_train),
    SimpleNamespace(NAME="sample", HELP="generate text from a checkpoint written by `train --save`",
                    add_arguments=_add_sample_arguments, run=_run_sample),
    SimpleNamespace(NAME="task", HELP="train on a long-range task (adding problem, copy task), compare cells",
                    add_arguments=_add_task_arguments, run=_run_task),
]
