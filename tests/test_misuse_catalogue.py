"""Issue 16's misuse catalogue, rerunnable: every way an adversarial user broke the engine, the command line
and the checkpoints, one case a row, in three tables (ENGINE, CLI, CHECKPOINT). A case passes when the
misuse ends in a clear error (the message fragment given) and leaves the state it touched as it was —
gradients and weights for the engine, every file of the working folder for the command line (each refused
command is one line on stderr with exit code 2, no traceback), the model and the file for checkpoints — or,
for the few misuses that now succeed (a symlink as an output, a missing output folder), in the right result.

The counts of the report's table (cases tried per area) are counts(), and the fuzzed ones fuzzed_counts()
(tests/test_cli_fuzz.py, the bit flips and kill -9s of tests/test_checkpoint.py, the in-place fuzz of
tests/test_reliability.py): from tests/,
    ../.venv/bin/python -c "import test_misuse_catalogue as c; print(c.counts(), c.fuzzed_counts())"
and the failures are what pytest reports failing in this file."""
import hashlib
import json
import os
import shutil
import stat
import zipfile

import numpy as np
import pytest

import tinygrad_rnn.functional as F
from test_checkpoint import _bomb, _dead_pid, _zip_of
from test_cli_errors import assert_one_line_error, run_cli
from tinygrad_rnn import Parameter, Tensor, Unroll, detect_anomaly, gradcheck, nn, no_grad, stack
from tinygrad_rnn.cli import main
from tinygrad_rnn.errors import GraphFreedError, InplaceError, ShapeError
from tinygrad_rnn.gradcheck import GradcheckError
from tinygrad_rnn.optim import clip_grad_norm

TINY = ["--steps", "1", "--hidden", "8", "--seq", "10", "--no-progress"]


# --- engine: (misuse, the error it raises, a fragment of its message, the state it must leave alone) ------

def _hello(dtype=np.float64):
    from tinygrad_rnn.demo import hello_example
    model, xs, targets, _ = hello_example(3, 0, dtype)
    return model, xs, targets


def _sqrt_at_zero():
    x = Parameter(np.array([0.0, 1.0]))
    return lambda: gradcheck(lambda x: ((x * x) ** 0.5).sum(), [x]), lambda: x.grad


def _nan_valued():
    x = Parameter(np.array([1.0, 2.0]))
    return lambda: gradcheck(lambda x: (x * np.nan).sum(), [x]), lambda: x.grad


def _truncated_nan():
    from tinygrad_rnn.analysis import truncated_gradcheck
    model, xs, targets = _hello()
    model.V.data = model.V.data.copy()
    model.V.data[0, 0] = np.nan
    return lambda: truncated_gradcheck(model, xs, targets, k=2), lambda: model.W.data


def _tensor_of_tensor_updated():
    x, c = Parameter([1.0, 2.0]), Tensor([3.0, 4.0])
    y = (x * c).sum()
    alias = Tensor(c)  # shares c's array: an update through it must be seen

    def misuse():
        alias.__iadd__(1.0)
        y.backward()
    return misuse, lambda: x.grad


def _per_step_grad_after_state_reset():
    model, xs, targets = _hello()
    L, out = model.loss(xs, targets)
    L.backward()
    carried = out.states[-1].detach()  # s(4), the factor of V(4)'s gradient

    def misuse():
        carried.__imul__(0.0)  # torch's h.zero_() idiom
        return out.tape.copies(model.V)[3].grad
    return misuse, lambda: model.V.grad


def _regression_targets_transposed():
    model = nn.SequenceClassifier(2, 4, 2, cell="rnn", seed=0, dtype=np.float64)
    xs = np.random.default_rng(1).standard_normal((5, 3, 2))
    return lambda: model.loss(xs, np.arange(6.0).reshape(2, 3), kind="regression"), \
        lambda: next(iter(model.parameters())).data


def _failed_backward_then_again():
    x = Parameter(np.array([0.0, 1.0]), name="x")
    with np.errstate(all="ignore"):
        y = (x ** 0.5).sum()

    def misuse():
        with detect_anomaly(), np.errstate(all="ignore"):
            try:
                y.backward()
            except Exception:
                pass
        assert x.grad is None  # the failed backward changed nothing ...
        with np.errstate(all="ignore"):
            y.backward()       # ... and kept the graph: this one runs (was "backward ... a second time")
        assert np.isinf(x.grad[0]) and x.grad[1] == 0.5
        raise RuntimeError("second backward ran")
    return misuse, lambda: None


def _clip(max_norm, grad=3.0, **options):
    p = Parameter([1.0])
    p.grad = np.array([grad])
    return lambda: clip_grad_norm([p], max_norm, **options), lambda: p.grad


def _backward_twice():
    model, xs, targets = _hello()
    L, _ = model.loss(xs, targets)
    L.backward()
    return L.backward, lambda: model.W.grad


def _inplace_on_saved_input():
    W = Parameter(np.eye(2), name="W")
    x = Tensor(np.ones((1, 2)), name="x(1)")
    tape = Unroll(shared=[W])
    with tape.step(1):
        y = (x @ W).tanh().sum()

    def misuse():
        x[0, 0] = 5.0
        y.backward()
    return misuse, lambda: W.grad


def _in_no_grad(action):
    def misuse():
        with no_grad():
            action()
    return misuse


def _model_and_bad_state(change):
    model = nn.RNN(4, 3, 4, seed=0)
    state = model.state_dict()
    change(state)
    return lambda: model.load_state_dict(state), lambda: model.W.data


def _parameter(*shape):
    return Parameter(np.ones(shape), name="p")


ENGINE = {
    # issue 16 #1-#7: wrong results with no error
    "gradcheck NaN analytic gradient": (_sqrt_at_zero, GradcheckError, "non-finite"),
    "gradcheck NaN function value": (_nan_valued, GradcheckError, "value is nan at the inputs (not finite)"),
    "truncated_gradcheck NaN": (_truncated_nan, GradcheckError, "non-finite"),
    "update through Tensor(t)": (_tensor_of_tensor_updated, InplaceError, "modified by an in-place operation"),
    "per-step gradient after state *= 0": (_per_step_grad_after_state_reset, InplaceError, "in-place"),
    "regression targets (2,3) for (3,2)": (_regression_targets_transposed, ShapeError, "do not fit the predictions"),
    "backward again after a failed one": (_failed_backward_then_again, RuntimeError, "second backward ran"),
    "clip_grad_norm(max_norm=nan)": (lambda: _clip(np.nan), ValueError, "max_norm must be a finite number"),
    "clip_grad_norm(max_norm=-1)": (lambda: _clip(-1.0), ValueError, "max_norm must be a finite number"),
    "clip_grad_norm(max_norm=inf)": (lambda: _clip(np.inf), ValueError, "max_norm must be a finite number"),
    "clip_grad_norm inf grads, error_if_nonfinite": (lambda: _clip(1.0, np.inf, error_if_nonfinite=True),
                                                     RuntimeError, "cannot be clipped"),
    # shapes, dtypes, values
    "matmul of mismatched shapes": (lambda: (lambda: _parameter(2, 3) @ _parameter(2, 3), lambda: None),
                                    ShapeError, "matmul"),
    "add that does not broadcast": (lambda: (lambda: _parameter(2, 3) + _parameter(4), lambda: None),
                                    ShapeError, "add"),
    "reshape to another size": (lambda: (lambda: _parameter(2, 3).reshape(4, 2), lambda: None), ShapeError,
                                "reshape"),
    "stack of unequal shapes": (lambda: (lambda: stack([_parameter(2), _parameter(3)]), lambda: None),
                                ShapeError, "stack"),
    "integer data requiring grad": (lambda: (lambda: Tensor(np.arange(3), requires_grad=True), lambda: None),
                                    TypeError, "floating-point"),
    "complex data requiring grad": (lambda: (lambda: Tensor(np.array([1j]), requires_grad=True), lambda: None),
                                    TypeError, "floating-point"),
    "cross_entropy target out of range": (lambda: (lambda: F.cross_entropy(_parameter(2, 4), [1, 4]),
                                                   lambda: None), ValueError, "targets must be in [0, 4)"),
    "cross_entropy float targets": (lambda: (lambda: F.cross_entropy(_parameter(2, 4), np.array([0.5, 1.0])),
                                             lambda: None), TypeError, "integer"),
    "binary_cross_entropy p outside [0,1]": (lambda: (lambda: F.binary_cross_entropy(
        Parameter(np.array([0.2, 1.5])), np.array([0.0, 1.0])), lambda: None), ValueError, "[0, 1]"),
    "RNN input of the wrong width": (lambda: (lambda: nn.RNN(4, 3, 4).loss(np.ones((4, 5)), [1, 2, 2, 3]),
                                              lambda: None), ValueError, "got (4, 5)"),
    "grad of the wrong shape": (lambda: (lambda: setattr(_parameter(2), "grad", np.ones(3)), lambda: None),
                                ShapeError, "(3,)"),
    "load_state_dict of another shape": (lambda: _model_and_bad_state(lambda s: s.update(W=np.ones((5, 5)))),
                                         ValueError, "'W'"),
    "load_state_dict with a missing key": (lambda: _model_and_bad_state(lambda s: s.pop("W")), ValueError,
                                           "missing keys ['W']"),
    # backward misuse and in-place updates
    "backward twice through a freed graph": (_backward_twice, GraphFreedError, "retain_graph=True"),
    "backward of a non-scalar": (lambda: (lambda: (_parameter(2, 3) * 2).backward(), lambda: None),
                                 RuntimeError, "backward(grad=...)"),
    "backward inside no_grad": (lambda: (_in_no_grad((_parameter(3) * 2).sum().backward), lambda: None),
                                RuntimeError, "no_grad"),
    "in-place change of a saved input": (_inplace_on_saved_input, InplaceError, "matmul at step 1"),
    "in-place on a parameter while recording": (lambda: (lambda: _parameter(3).__iadd__(1.0), lambda: None),
                                                InplaceError, "no_grad"),
    "+= that does not broadcast": (lambda: (lambda: Tensor(np.ones(3), name="t").__iadd__(np.ones(4)),
                                            lambda: None), ShapeError, "cannot update t of shape (3,)"),
    "Unroll steps out of order": (lambda: (_steps_out_of_order, lambda: None), ValueError, "increasing order"),
}


def _steps_out_of_order():
    tape = Unroll()
    with tape.step(2):
        pass
    with tape.step(1):
        pass


def _same(a, b):
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b, equal_nan=True))


@pytest.mark.parametrize("case", [f"engine: {name}" for name in ENGINE])
def test_engine_misuse(case):
    make, error, fragment = ENGINE[case.removeprefix("engine: ")]
    with np.errstate(all="ignore"):
        misuse, state = make()
        before = state()
        before = None if before is None else np.array(before, copy=True)
        with pytest.raises(error) as info:
            misuse()
    assert fragment in str(info.value), str(info.value)
    assert _same(state(), before), "the misuse changed the state it touched"


def test_binary_cross_entropy_keeps_its_own_targets():
    # issue 16 #3 is a wrong result, not an error: changing the targets after the forward changes nothing
    p, t = Parameter(np.array([0.8, 0.3])), np.array([0.0, 1.0])
    L = F.binary_cross_entropy(p, t)
    t[0] = 1.0
    L.backward()
    np.testing.assert_allclose(p.grad, [0.5 / 0.2, -0.5 / 0.3])  # ∂/∂p mean(-t log p - (1-t) log(1-p))


# --- command line: (argv, a fragment of the one-line error); every file of the folder stays as it was ------

CLI = {
    # the 21 inputs that ended in a traceback
    "demo --hidden 0": (["demo", "--hidden", "0"], "argument --hidden: expected an integer ≥ 1, got 0"),
    "demo --hidden -3": (["demo", "--hidden", "-3"], "argument --hidden"),
    "demo --hidden 100000": (["demo", "--hidden", "100000"], "use --hidden ≤ 256"),
    "demo --epochs 0": (["demo", "--epochs", "0"], "argument --epochs"),
    "train --lr inf": (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0, got inf"),
    "train --lr 1e300 (the update overflows float32)": (["train", "--steps", "5", "--hidden", "8", "--seq", "10",
                                              "--no-progress", "--lr", "1e300", "--save", "ck.npz"],
                                             "the loss became"),
    "task --lr inf": (["task", "adding", "--lr", "inf"], "argument --lr"),
    "task --lr 1e300 (the update overflows float32)": (["task", "adding", "--T", "5", "--hidden", "4", "--batch", "4",
                                             "--steps", "20", "--lr", "1e300", "--no-progress"], "the loss became"),
    "render --steps 1e8": (["render", "--steps", "1e8"], "argument --steps: expected an integer, got '1e8'"),
    "render --steps 100000000": (["render", "--steps", "100000000"], "GB of memory"),
    "render --steps 200000": (["render", "--steps", "200000"], "use --steps ≤ 100,000"),
    "render --hidden 100000": (["render", "--hidden", "100000"], "GB of memory"),
    "analyze --repeats 1e5": (["analyze", "--repeats", "1e5"], "argument --repeats: expected an integer"),
    "analyze --repeats 100000": (["analyze", "--repeats", "100000"], "TB of memory"),
    "analyze --hidden 1000000": (["analyze", "--hidden", "1000000"], "of memory"),
    "train --hidden 1e6": (["train", "--hidden", "1e6"], "argument --hidden: expected an integer"),
    "train --hidden 1000000": (["train", "--hidden", "1000000"], "TB of memory"),
    "train --batch 1e7": (["train", "--batch", "1e7"], "argument --batch"),
    "train --batch 10000000": (["train", "--batch", "10000000"], "TB of memory"),
    "task copy --hidden 100000": (["task", "copy", "--hidden", "100000"], "GB of memory"),
    "task adding --T 100000000": (["task", "adding", "--T", "100000000"], "TB of memory"),
    "train --text /dev/zero": (["train", "--text", "/dev/zero"], "not a regular file"),
    "sample, metadata hidden=-5": (["sample", "--load", "forged-5.npz"], "hidden = -5, not a positive integer"),
    "sample, metadata hidden=10**6": (["sample", "--load", "forged-big.npz"], "not (1000000, 1000000)"),
    "analyze, metadata hidden=10**6": (["analyze", "--load", "forged-big.npz"], "not (1000000, 1000000)"),
    # the 9 bad values accepted with exit code 0
    "train --clip nan": (["train", "--clip", "nan"], "argument --clip: expected a finite number ≥ 0, got nan"),
    "task --clip nan": (["task", "copy", "--clip", "nan"], "argument --clip"),
    "demo --lr -1": (["demo", "--lr", "-1"], "argument --lr"),
    "demo --lr nan": (["demo", "--lr", "nan"], "argument --lr"),
    "demo --lr inf": (["demo", "--lr", "inf"], "argument --lr"),
    "sample --temperature inf": (["sample", "--load", "ck.npz", "--temperature", "inf"], "argument --temperature"),
    "bench --min-time nan": (["bench", "--min-time", "nan"], "argument --min-time: expected a finite number ≥ 0"),
    "bench --wait-quiet -5": (["bench", "--wait-quiet", "-5"], "argument --wait-quiet"),
    # other ranges, named by their flag
    "train --seed -1": (["train", "--seed", "-1"], "argument --seed: expected an integer ≥ 0, got -1"),
    "train --clip -1": (["train", "--clip", "-1"], "argument --clip"),
    "train --steps 0": (["train", "--steps", "0"], "argument --steps"),
    "train --seq 0": (["train", "--seq", "0"], "argument --seq"),
    "train --bptt 0": (["train", "--bptt", "0"], "argument --bptt"),
    "train --threads -1": (["train", "--threads", "-1"], "argument --threads"),
    "sample --n -1": (["sample", "--load", "ck.npz", "--n", "-1"], "argument --n"),
    "sample --temperature nan": (["sample", "--load", "ck.npz", "--temperature", "nan"], "argument --temperature"),
    "analyze --seed -1": (["analyze", "--seed", "-1"], "argument --seed"),
    "analyze --adding 1": (["analyze", "--adding", "1"], "argument --adding"),
    "analyze --init-scale nan": (["analyze", "--init-scale", "nan"], "--init-scale"),
    "render --steps 0": (["render", "--steps", "0"], "argument --steps: expected an integer ≥ 1, got 0"),
    "render --hidden -1": (["render", "--hidden", "-1"], "argument --hidden"),
    "render --seed -1": (["render", "--seed", "-1"], "argument --seed: expected an integer ≥ 0"),
    "render --max-steps 1": (["render", "--max-steps", "1"], "argument --max-steps"),
    "bench --min-time -1": (["bench", "--min-time", "-1"], "argument --min-time"),
    "bench --min-time inf": (["bench", "--min-time", "inf"], "argument --min-time"),
    "bench --threads 0": (["bench", "--threads", "0"], "argument --threads"),
    "bench --min-repeats 0": (["bench", "--min-repeats", "0"], "argument --min-repeats"),
    "bench --rows 1,2,x,4": (["bench", "--rows", "1,2,x,4"], "four positive integers"),
    "bench --quick --rows": (["bench", "--quick", "--rows", "1,2,3,4"], "give one of them"),
    # argparse's own errors: one line, no usage block
    "unknown subcommand": (["no-such-command"], "invalid choice: 'no-such-command'"),
    "unknown option": (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    "bad choice": (["train", "--cell", "xyz"], "invalid choice: 'xyz'"),
    "missing required option": (["sample"], "the following arguments are required: --load"),
    "option without its value": (["train", "--steps"], "expected one argument"),
    "not a number": (["demo", "--lr", "fast"], "argument --lr: expected a number"),
    # outputs checked before any work (the checkpoint ck.npz is never replaced by a run that fails)
    "train --plot with a bad suffix": (["train", *TINY, "--save", "ck.npz", "--plot", "p.xyz"], "--plot p.xyz"),
    "train --plot a folder": (["train", *TINY, "--save", "ck.npz", "--plot", "adir"], "is a folder"),
    "train --plot under a file": (["train", *TINY, "--save", "ck.npz", "--plot", "afile/p.png"], "afile is a file"),
    "train --save a folder": (["train", *TINY, "--save", "adir"], "is a folder"),
    "train --save not .npz": (["train", *TINY, "--save", "model.pt"], "end it in .npz"),
    "train --plot is --text": (["train", *TINY, "--text", "notes.png", "--plot", "notes.png"], "the same file"),
    "task --plot a folder": (["task", "adding", "--plot", "adir"], "is a folder"),
    "analyze -o a file": (["analyze", "-o", "afile"], "exists and is not a folder"),
    "render -o a folder": (["render", "-o", "adir"], "is a folder"),
    "render -o with a bad suffix": (["render", "-o", "x.xyz"], "end it in .pdf"),
    "render -o under a file": (["render", "-o", "afile/x.pdf"], "afile is a file"),
    "render --format against the suffix": (["render", "--format", "svg", "-o", "x.pdf"], "does not match"),
    "bench --out under a file": (["bench", "--quick", "--out", "afile/results"], "--out afile/results"),
    # inputs: named in the message
    "train --text missing": (["train", "--text", "missing.txt"], "missing.txt"),
    "train --text empty": (["train", "--text", "empty.txt"], "empty.txt"),
    "train --text not UTF-8": (["train", "--text", "latin1.txt"], "latin1.txt"),
    "train --text a folder": (["train", "--text", "adir"], "is a directory"),
    "sample --prime unknown characters": (["sample", "--load", "ck.npz", "--prime", "€€"], "€"),
    "sample --load missing": (["sample", "--load", "missing.npz"], "missing.npz"),
    "sample --load a folder": (["sample", "--load", "adir"], "is a directory"),
    "sample --load a PNG": (["sample", "--load", "png.npz"], "is not a tinygrad_rnn checkpoint"),
    "sample --load random bytes": (["sample", "--load", "random.npz"], "is not a tinygrad_rnn checkpoint"),
    "sample --load text": (["sample", "--load", "text.npz"], "is not a tinygrad_rnn checkpoint"),
    "sample --load a temp file of a save": (["sample", "--load", "TEMP"], "unfinished temporary file"),
    "analyze --load a PNG": (["analyze", "--load", "png.npz"], "is not a tinygrad_rnn checkpoint"),
    "sample --load with an unexpected member": (["sample", "--load", "extra.npz"], "unexpected members ['extra']"),
    # found by tests/test_cli_fuzz.py: '--' as an option's value was [] (a TypeError traceback), an option
    # before any subcommand printed the help with exit code 0
    "demo --hidden=--": (["demo", "--hidden=--"], "argument --hidden: expected an integer, got '--'"),
    "train --lr=--": (["train", "--lr=--"], "argument --lr: expected a number, got '--'"),
    "an option without a subcommand": (["--bogus"], "unrecognized arguments: --bogus"),
    "a 5,000-digit value": (["train", "--hidden", "9" * 5000], "'" + "9" * 40 + "'… (5,000 characters)"),
}


@pytest.fixture(scope="module")
def folder_template(tmp_path_factory):
    """The files each command-line case runs among: a checkpoint, texts, forged and foreign checkpoints,
    a folder, a file, and symlinks."""
    root = tmp_path_factory.mktemp("template")
    assert main(["train", *TINY, "--save", str(root / "ck.npz")]) == 0
    with np.load(root / "ck.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for name, hidden in (("forged-5.npz", -5), ("forged-big.npz", 10 ** 6)):
        meta = dict(json.loads(str(arrays["__metadata__"])), hidden=hidden)
        np.savez(root / name, **dict(arrays, __metadata__=np.array(json.dumps(meta))))
    np.savez(root / "extra.npz", **arrays, extra=np.ones(3, np.float32))  # a weight no char model has
    (root / "png.npz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (root / "random.npz").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "text.npz").write_text("U = [[1, 2], [3, 4]]\n")
    shutil.copy(root / "ck.npz", root / f".tmp-ck.npz.{_dead_pid()}.abcd1234")
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (root / "notes.png").write_text("Beautiful is better than ugly.\n" * 20)
    (root / "adir").mkdir()
    (root / "afile").write_text("a file")
    (root / "target.txt").write_text("the symlink's target")
    for link in ("link.png", "link.pdf"):
        os.symlink("target.txt", root / link)
    return root


@pytest.fixture
def folder(folder_template, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(folder_template, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


def snapshot(root):
    """Every entry below `root`: kind, permission bits, and the content's hash or the link's target."""
    entries = {}
    for directory, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                what = "link -> " + os.readlink(path)
            elif stat.S_ISDIR(info.st_mode):
                what = "folder"
            else:
                what = hashlib.sha256(open(path, "rb").read()).hexdigest()
            entries[os.path.relpath(path, root)] = (what, stat.S_IMODE(info.st_mode))
    return entries


@pytest.mark.parametrize("case", [f"cli: {name}" for name in CLI])
def test_cli_misuse(case, folder, capsys):
    argv, fragment = CLI[case.removeprefix("cli: ")]
    temp = next(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))
    argv = [temp if a == "TEMP" else a for a in argv]
    before = snapshot(folder)
    assert_one_line_error(*run_cli(capsys, *argv), fragment)
    assert snapshot(folder) == before, "a refused command changed the folder"


def test_cli_symlink_outputs_are_replaced_and_their_target_kept(folder, capsys):
    # was: render -o and --plot wrote through the link onto its target
    for argv, link in ((["train", *TINY, "--plot", "link.png"], "link.png"),
                       (["render", "-o", "link.pdf"], "link.pdf")):
        assert main(argv) == 0
        assert not os.path.islink(link) and os.path.getsize(link) > 1000
    assert (folder / "target.txt").read_text() == "the symlink's target"


def test_cli_a_missing_plot_folder_is_created_and_the_run_succeeds(folder, capsys):
    # was: trained, replaced ck.npz, then exit 2 on `--plot nodir/p.png`
    assert main(["train", *TINY, "--save", "ck.npz", "--plot", "nodir/p.png"]) == 0
    assert (folder / "nodir" / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-ck.npz")) == []  # stale temp cleaned


# --- checkpoints: (how the file is made, the error, a fragment); the model and the file stay as they were ---

def _weights(**changes):
    state = nn.RNN(3, 4, 5, seed=0).state_dict()
    state.update(changes)
    return lambda p: _zip_of(p, state)


def _truncated(p):
    nn.RNN(3, 4, 5, seed=0).save(p)
    p.write_bytes(p.read_bytes()[:300])


def _lying_header(p):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}
    _zip_of(p, {"W": (header, bytes(16), 1)})


def _zip_of_text(p):
    with zipfile.ZipFile(p, "w") as archive:
        archive.writestr("readme.txt", "hello")


def _bad_metadata(p):
    nn.RNN(3, 4, 5, seed=0).save(p)
    with np.load(p) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(p, **arrays, __metadata__=np.array("{not json"))


def _npy(p):
    np.save(p, np.ones(3))
    os.replace(str(p) + ".npy", p)


CHECKPOINT = {
    "a PNG": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), "not a tinygrad_rnn checkpoint"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(500)), "not a tinygrad_rnn checkpoint"),
    "text": (lambda p: p.write_text("W = 1\n"), "not a tinygrad_rnn checkpoint"),
    "an empty file": (lambda p: p.write_bytes(b""), "not a tinygrad_rnn checkpoint"),
    "a single .npy": (_npy, "a single .npy array"),
    "a zip of other files": (_zip_of_text, "members that are not .npy arrays"),
    "a truncated file": (_truncated, "truncated or corrupted"),
    "a header that lies about its size": (_lying_header, "declares"),
    "a zip bomb": (lambda p: _bomb(p, side=2000), "zip bomb"),
    "complex weights": (_weights(W=np.ones((4, 4), complex)), "complex"),
    "integer weights": (_weights(W=np.ones((4, 4), np.int64)), "not a real floating-point array"),
    "NaN weights": (_weights(V=np.full((4, 5), np.nan, np.float32)), "non-finite values"),
    "Inf weights": (_weights(b=np.full(4, np.inf, np.float32)), "non-finite values"),
    "another architecture": (lambda p: nn.RNN(3, 6, 5, seed=0).save(p), "'W' has shape (6, 6)"),
    "a missing weight": (lambda p: _zip_of(p, {k: v for k, v in nn.RNN(3, 4, 5).state_dict().items() if k != "W"}),
                         "W"),
    "corrupted metadata": (_bad_metadata, "corrupted metadata"),
    "a folder": (lambda p: p.mkdir(), "is a directory"),
    "the temp file of a killed save": (lambda p: nn.RNN(3, 4, 5).save(p), "unfinished temporary file"),
}


@pytest.mark.parametrize("case", [f"checkpoint: load {name}" for name in CHECKPOINT])
def test_checkpoint_misuse(case, tmp_path):
    make, fragment = CHECKPOINT[case.removeprefix("checkpoint: load ")]
    name = f".tmp-m.npz.{_dead_pid()}.abcd1234" if "temp file" in case else "m.npz"
    path = tmp_path / name
    make(path)
    model = nn.RNN(3, 4, 5, seed=7)
    before, files = model.state_dict(), snapshot(tmp_path)
    with pytest.raises((nn.CheckpointError, KeyError, ValueError)) as info:
        model.load(path)
    message = str(info.value)
    assert fragment in message and path.name in message and "allow_pickle" not in message, message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert snapshot(tmp_path) == files


def _disk_full(monkeypatch):
    def savez(f, **arrays):
        f.write(b"PK half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize("case,target,fragment,error", [
    ("checkpoint: save on a full disk", "m.npz", "No space left on device", OSError),
    ("checkpoint: save onto a folder", "adir", "is a directory", IsADirectoryError),
    ("checkpoint: save into a missing folder", "nodir/m.npz", "does not exist", FileNotFoundError),
    ("checkpoint: save non-finite weights", "m.npz", "non-finite values; nothing was written", ValueError),
])
def test_checkpoint_save_misuse(case, target, fragment, error, tmp_path, monkeypatch):
    nn.RNN(3, 4, 5, seed=0).save(tmp_path / "m.npz")
    os.chmod(tmp_path / "m.npz", 0o640)
    (tmp_path / "adir").mkdir()
    model = nn.RNN(3, 4, 5, seed=1)
    if "full disk" in case:
        _disk_full(monkeypatch)
    if "non-finite" in case:
        model.V.data = np.full_like(model.V.data, np.nan)
    files = snapshot(tmp_path)
    with pytest.raises(error) as info:
        model.save(tmp_path / target)
    assert fragment in str(info.value) and ".tmp-" not in str(info.value), str(info.value)
    assert snapshot(tmp_path) == files  # the old checkpoint, its mode, no temporary file left


def test_checkpoint_save_keeps_the_mode_and_removes_what_killed_saves_left(tmp_path):
    path = tmp_path / "m.npz"
    nn.RNN(3, 4, 5, seed=0).save(path)
    os.chmod(path, 0o640)
    stale = tmp_path / f".tmp-m.npz.{_dead_pid()}.abcd1234"
    stale.write_bytes(b"PK partial")
    nn.RNN(3, 4, 5, seed=1).save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"] and stat.S_IMODE(os.stat(path).st_mode) == 0o640


def counts():
    """Cases tried per area: the rows of each table plus the area's separate tests (named in the sums)."""
    return {"engine": len(ENGINE) + 1,             # + binary_cross_entropy keeps its own targets
            "cli": len(CLI) + 2,                   # + symlink outputs, a missing plot folder
            "checkpoint": len(CHECKPOINT) + 4 + 1}  # + the 4 save misuses, mode kept and stale temp removed


def fuzzed_counts():
    """Fuzzed cases per area, beyond the tables (each test asserts every case handled, so the failures are
    what pytest reports failing there)."""
    import test_checkpoint
    import test_cli_fuzz
    import test_reliability
    return {"engine": test_reliability.INPLACE_FUZZ,          # in-place updates after backward, per-step grads read
            "cli": test_cli_fuzz.FLAG_VALUES + test_cli_fuzz.TOKEN_SOUPS,
            "checkpoint": 2 * test_checkpoint.BIT_FLIPS + test_checkpoint.KILLS}  # + 2 x 400 flips, kill -9s
