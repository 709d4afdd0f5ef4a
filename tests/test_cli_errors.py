"""Bad command-line input: one line on stderr, exit code 2, no traceback, nothing overwritten."""
import numpy as np
import pytest

from tinygrad_rnn import nn
from tinygrad_rnn.cli import main


def run_cli(capsys, *argv):
    """(exit code, stderr) of `tinygrad-rnn ARGV` run in this process; argparse's errors exit by SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinygrad-rnn"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def checkpoint(tmp_path, capsys):
    path = tmp_path / "zen.npz"
    assert main(["train", "--steps", "2", "--hidden", "8", "--seq", "10", "--save", str(path)]) == 0
    capsys.readouterr()
    return path


def test_missing_text_file(tmp_path, capsys):
    assert_one_line_error(*run_cli(capsys, "train", "--text", tmp_path / "nope.txt", "--steps", "1"), "nope.txt")


def test_empty_text_file(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(*run_cli(capsys, "train", "--text", empty, "--steps", "1"), "empty.txt")


def test_text_file_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00not utf-8 \x80")
    assert_one_line_error(*run_cli(capsys, "train", "--text", bad, "--steps", "1"), "utf-8")


def test_prime_with_unknown_characters(checkpoint, capsys):
    assert_one_line_error(*run_cli(capsys, "sample", "--load", checkpoint, "--prime", "Beautiful☃", "--n", "5"),
                          "☃")


def test_checkpoint_of_another_architecture_and_garbled_file(tmp_path, capsys):
    linear = tmp_path / "linear.npz"
    nn.Linear(3, 4).save(linear)
    assert_one_line_error(*run_cli(capsys, "sample", "--load", linear, "--n", "5"), "linear.npz")
    garbled = tmp_path / "garbled.npz"
    garbled.write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert_one_line_error(*run_cli(capsys, "sample", "--load", garbled, "--n", "5"), "garbled.npz")


def test_failed_training_does_not_overwrite_the_checkpoint(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, err = run_cli(capsys, "train", "--text", empty, "--steps", "1", "--save", checkpoint)
    assert_one_line_error(code, err)
    assert checkpoint.read_bytes() == before
    with np.load(checkpoint, allow_pickle=False) as f:  # still a readable checkpoint
        assert len(f.files) > 0


def test_npy_file_and_incomplete_metadata_are_clear_errors(tmp_path, capsys):
    npy = tmp_path / "weights.npy"
    np.save(npy, np.ones(3))
    assert_one_line_error(*run_cli(capsys, "sample", "--load", npy, "--n", "5"), "weights.npy")
    partial = tmp_path / "partial.npz"
    nn.Linear(2, 2).save(partial, metadata={"kind": "char_lm"})
    assert_one_line_error(*run_cli(capsys, "sample", "--load", partial, "--n", "5"), "partial.npz")


def test_negative_clip_and_unwritable_outputs_fail_before_training(tmp_path, capsys, monkeypatch):
    from tinygrad_rnn import train
    monkeypatch.setattr(train, "train_char_lm", lambda *a, **k: pytest.fail("trained before checking outputs"))
    monkeypatch.setattr(train, "train_task", lambda *a, **k: pytest.fail("trained before checking outputs"))
    assert_one_line_error(*run_cli(capsys, "train", "--steps", "1", "--clip", "-1"), "--clip")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert_one_line_error(*run_cli(capsys, "train", "--steps", "1", "--save", a_file / "zen.npz"),
                          "--save", "cannot create its folder", "is a file, not a folder")
    assert_one_line_error(*run_cli(capsys, "task", "adding", "--plot", a_file / "sub" / "a.png"),
                          "--plot", "cannot create its folder")


def test_missing_output_folders_are_created(tmp_path, capsys):
    save = tmp_path / "out" / "zen.npz"
    assert main(["train", "--steps", "1", "--hidden", "8", "--seq", "10", "--save", str(save), "--no-progress"]) == 0
    assert save.exists() and (tmp_path / "out" / "zen.png").exists()


def _fake_package(root, name):
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("raise SystemExit('the foreign package was imported')\n")
    return root


def test_a_foreign_viz_is_refused_in_one_line_and_other_commands_still_work(tmp_path):
    from test_cli_demo import _module_cli
    fake = _fake_package(tmp_path / "fake", "viz")  # like `pip install viz` (a PyPI project of that name)
    done = _module_cli("render", "--example", "hello", "-o", "g.dot", cwd=tmp_path, pythonpath=[fake])
    assert_one_line_error(done.returncode, done.stderr, "tinygrad-rnn render: error:", str(fake / "viz"),
                          "another project's package", "pip uninstall viz")
    assert not (tmp_path / "g.dot").exists()
    done = _module_cli("demo", "--epochs", "1", cwd=tmp_path, pythonpath=[fake])
    assert done.returncode == 0 and "gradcheck" in done.stdout


def test_bench_outside_a_checkout_says_where_it_runs(tmp_path):
    from test_cli_demo import _module_cli
    fake = _fake_package(tmp_path / "fake", "benchmarks")  # the PyPI `benchmarks`, not this project's harness
    done = _module_cli("bench", "--quick", cwd=tmp_path, pythonpath=[fake])
    assert_one_line_error(done.returncode, done.stderr, "source checkout", "make bench")


def test_an_overwritten_viz_is_detected_by_its_recorded_hash(monkeypatch):
    from tinygrad_rnn import cli
    assert cli.foreign_package_problem("viz") is None  # this checkout's viz
    monkeypatch.setattr(cli, "_recorded_hash", lambda path: "not-the-hash-pip-recorded")
    problem = cli.foreign_package_problem("viz")
    assert "was overwritten by another distribution named 'viz'" in problem
    assert cli.foreign_package_problem("no_such_package_xyz") == "the package 'no_such_package_xyz' is not installed"
