"""Bad values never reach the work: ranges are checked by argparse (the message names the flag), work that
cannot fit in memory is refused up front with the estimate, checkpoints are checked from their headers
before a model is built, and every failure is one line on stderr with exit code 2 — never a traceback."""
import json
import pathlib
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from test_cli_errors import assert_one_line_error, run_cli
from tinygrad_rnn import cli_checks, nn, train
from tinygrad_rnn.cli import main

TINY = ["--steps", "1", "--hidden", "8", "--seq", "10", "--no-progress"]


@pytest.mark.parametrize("argv,fragment", [
    (["demo", "--hidden", "0"], "argument --hidden: expected an integer ≥ 1, got 0"),  # was OverflowError
    (["demo", "--hidden", "-3"], "argument --hidden: expected an integer ≥ 1, got -3"),
    (["demo", "--epochs", "0"], "argument --epochs: expected an integer ≥ 1, got 0"),  # was UnboundLocalError
    (["demo", "--lr", "-1"], "argument --lr: expected a finite number > 0, got -1"),   # were accepted, exit 0
    (["demo", "--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["demo", "--lr", "inf"], "argument --lr: expected a finite number > 0, got inf"),
    (["demo", "--seed", "-1"], "argument --seed: expected an integer ≥ 0, got -1"),
    (["train", "--lr", "inf"], "argument --lr"),
    (["train", "--lr", "nan"], "argument --lr"),
    (["train", "--clip", "nan"], "argument --clip: expected a finite number ≥ 0, got nan"),  # was: no clipping
    (["train", "--clip", "inf"], "argument --clip"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer ≥ 0"),  # was numpy's words, no flag
    (["train", "--hidden", "1e6"], "argument --hidden: expected an integer, got '1e6'"),
    (["task", "adding", "--lr", "inf"], "argument --lr"),
    (["task", "copy", "--clip", "nan"], "argument --clip"),
    (["sample", "--load", "x.npz", "--temperature", "inf"], "argument --temperature"),  # was accepted
    (["sample", "--load", "x.npz", "--temperature", "nan"], "argument --temperature"),
    (["sample", "--load", "x.npz", "--n", "-1"], "argument --n"),
    (["analyze", "--seed", "-1"], "argument --seed"),
    (["analyze", "--adding", "1"], "argument --adding: expected an integer ≥ 2"),
])
def test_out_of_range_values_name_their_flag(capsys, argv, fragment):
    assert_one_line_error(*run_cli(capsys, *argv), fragment)


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--cell", "xyz"], "invalid choice: 'xyz'"),
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["sample"], "the following arguments are required: --load"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_argparse_errors_are_one_line(capsys, argv, fragment):
    code, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, fragment, "--help")  # was the usage block and the error, 2-7 lines
    assert "usage:" not in err


@pytest.mark.parametrize("argv,fragments", [
    (["train", "--hidden", "1000000", "--steps", "1"], ("--hidden 1000000", "TB of memory", "available")),
    (["train", "--batch", "10000000", "--steps", "1"], ("--batch 10000000", "TB of memory")),
    (["task", "copy", "--hidden", "100000"], ("--hidden 100000", "GB of memory")),
    (["task", "adding", "--T", "100000000"], ("--T 100000000", "TB of memory")),
    (["analyze", "--repeats", "100000"], ("T = 499999 steps", "TB of memory", "lower --repeats")),
    (["analyze", "--hidden", "1000000"], ("--hidden 1000000", "of memory")),
    (["analyze", "--adding", "10000000"], ("--adding 10000000", "of memory")),
])
def test_work_that_cannot_fit_in_memory_is_refused_before_it_starts(capsys, monkeypatch, argv, fragments):
    monkeypatch.setattr(train, "train_char_lm", lambda *a, **k: pytest.fail("started training"))
    monkeypatch.setattr(train, "train_task", lambda *a, **k: pytest.fail("started training"))
    start = time.perf_counter()
    assert_one_line_error(*run_cli(capsys, *argv, "--no-progress" if argv[0] != "analyze" else "--format=png"),
                          *fragments)
    assert time.perf_counter() - start < 5  # was a MemoryError after 30-45 s


def test_the_memory_limit_is_what_the_machine_has(capsys, monkeypatch):
    needed = train.rnn_training_bytes(45, 8, 45, 1, 10, 32)
    monkeypatch.setattr(cli_checks, "available_memory", lambda: needed // 2)
    assert_one_line_error(*run_cli(capsys, "train", *TINY), "needs about", "more than the")
    monkeypatch.setattr(cli_checks, "available_memory", lambda: 100 * needed)
    assert run_cli(capsys, "train", *TINY)[0] == 0


def test_available_memory_is_a_positive_number_of_bytes():
    assert 1 << 20 < cli_checks.available_memory() <= cli_checks.os.sysconf("SC_PAGE_SIZE") * \
        cli_checks.os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize("cell,hidden,seq,batch", [("rnn", 128, 50, 32), ("lstm", 64, 20, 16)])
def test_the_memory_estimate_is_near_the_measured_peak(cell, hidden, seq, batch):
    text = "Beautiful is better than ugly. Explicit is better than implicit. " * 20
    vocab = len(set(text))
    tracemalloc.start()
    try:
        train.train_char_lm(text, cell=cell, hidden=hidden, seq=seq, batch=batch, max_steps=2, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = train.rnn_training_bytes(vocab, hidden, vocab, train.GATE_BLOCKS[cell], seq, batch)
    assert 0.5 < peak / estimate < 1.5, (peak, estimate)


def test_a_text_that_never_ends_or_is_too_large_is_refused(tmp_path, capsys, monkeypatch):
    start = time.perf_counter()
    assert_one_line_error(*run_cli(capsys, "train", *TINY, "--text", "/dev/zero"), "--text /dev/zero",
                          "not a regular file")
    assert time.perf_counter() - start < 5
    big = tmp_path / "big.txt"
    big.write_text("ab" * 1000)
    monkeypatch.setattr(cli_checks, "MAX_TEXT_BYTES", 1000)
    assert_one_line_error(*run_cli(capsys, "train", *TINY, "--text", big), "big.txt", "more than the 1 KB")


def test_a_decode_error_names_the_file(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait ".encode("latin-1") * 10)
    assert_one_line_error(*run_cli(capsys, "train", *TINY, "--text", bad), f"--text {bad}",
                          "cannot be decoded as utf-8")


def test_a_learning_rate_that_overflows_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    # 1e300 × any nonzero Adam step is ±inf in float32, so the weights are inf after the first update whatever the
    # summation order (1e30 only overflowed the loss for some orders: a test of luck, not of the check)
    save = tmp_path / "ck.npz"
    code, err = run_cli(capsys, "train", "--steps", "5", "--hidden", "8", "--seq", "10", "--no-progress",
                        "--lr", "1e300", "--save", save)
    assert_one_line_error(code, err, "the loss became", "lower the learning rate")  # was a traceback
    assert not save.exists()
    code, err = run_cli(capsys, "task", "adding", "--T", "5", "--hidden", "4", "--batch", "4", "--steps", "20",
                        "--lr", "1e300", "--no-progress")
    assert_one_line_error(code, err, "the loss became")  # no numpy RuntimeWarning lines either


@pytest.fixture
def checkpoint(tmp_path, capsys):
    path = tmp_path / "zen.npz"
    assert main(["train", *TINY, "--save", str(path)]) == 0
    capsys.readouterr()
    return path


def _with_metadata(path, target, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = dict(json.loads(str(arrays["__metadata__"])), **changes)
    np.savez(target, **dict(arrays, __metadata__=np.array(json.dumps(meta))))
    return target


@pytest.mark.parametrize("hidden,fragment", [(-5, "hidden = -5, not a positive integer"),
                                             (True, "hidden = True, not a positive integer"),
                                             (10 ** 6, "'W' is (8, 8), not (1000000, 1000000)")])
def test_checkpoint_metadata_is_checked_before_the_model_is_built(checkpoint, tmp_path, capsys, hidden,
                                                                  fragment):
    forged = _with_metadata(checkpoint, tmp_path / "forged.npz", hidden=hidden)
    tracemalloc.start()
    try:
        code, err = run_cli(capsys, "sample", "--load", forged, "--n", "5")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line_error(code, err, "forged.npz", fragment)  # was an OverflowError / MemoryError traceback
    assert peak < 20e6  # nothing of the size the metadata claims was allocated
    assert_one_line_error(*run_cli(capsys, "analyze", "--load", forged), "forged.npz", fragment)


def test_char_lm_shapes_are_the_models(checkpoint):
    model, vocab, meta = train.load_char_lm(checkpoint)
    for cell in ("rnn", "gru", "lstm"):
        built = nn.RNN(len(vocab), 6, len(vocab), cell=cell)
        assert train.char_lm_shapes(len(vocab), 6, cell) == {n: p.shape for n, p in built.named_parameters()}


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(200), bytes(range(256)) * 4,
                                     b"hello, not a checkpoint\n" * 10])
def test_files_of_another_kind_are_not_a_tinygrad_rnn_checkpoint(tmp_path, capsys, content):
    other = tmp_path / "other.npz"
    other.write_bytes(content)
    code, err = run_cli(capsys, "sample", "--load", other)
    assert_one_line_error(code, err, "other.npz", "is not a tinygrad_rnn checkpoint")
    assert "allow_pickle" not in err


def test_the_demo_check_fails_on_nan(capsys, monkeypatch):
    from tinygrad_rnn.unroll import Unroll
    real = Unroll.step_grads
    monkeypatch.setattr(Unroll, "step_grads", lambda self, p: real(self, p) * np.nan)
    code, err = run_cli(capsys, "demo", "--epochs", "1")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1  # was exit 0: `nan > 1e-12` is False
    assert "check failed" in lines[0] and "do not sum to the shared gradient" in lines[0] and "non-finite" in lines[0]


def test_demo_refuses_a_hidden_size_its_gradcheck_cannot_finish(capsys):
    assert_one_line_error(*run_cli(capsys, "demo", "--hidden", "100000"), "--hidden 100000", "use --hidden ≤ 256")


def test_a_broken_pipe_exits_quietly(tmp_path):
    checkout = pathlib.Path(__file__).resolve().parent.parent
    script = f"{sys.executable} -m tinygrad_rnn demo | head -1 > /dev/null; echo ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"})
    assert done.stderr == ""  # was "Exception ignored ... BrokenPipeError" or an error line
    assert done.stdout.strip() in ("0", "1")


def test_ctrl_c_during_training_is_one_line_and_leaves_no_file(tmp_path):
    import signal
    checkout = pathlib.Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, "-m", "tinygrad_rnn", "train", "--steps", "100000", "--hidden", "8",
                                "--seq", "10", "--no-progress", "--save", "ck.npz"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={"PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while not process.stdout.readline().startswith("Training") and time.time() < deadline:
        pass  # wait until training has started
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "tinygrad-rnn train: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []
