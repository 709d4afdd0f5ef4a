"""A failing run writes nothing: every output path is checked before any work, outputs are written
atomically (temp + rename), and a symlink given as an output is replaced, its target left alone."""
import os
import stat

import pytest

from test_cli_errors import assert_one_line_error, run_cli
from tinygrad_rnn import train
from tinygrad_rnn.outputs import write_atomically

TINY = ["--steps", "1", "--hidden", "8", "--seq", "10", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_training(monkeypatch):
    """Any training is a test failure: the checks must refuse before it starts."""
    monkeypatch.setattr(train, "train_char_lm", lambda *a, **k: pytest.fail("trained before checking outputs"))
    monkeypatch.setattr(train, "train_task", lambda *a, **k: pytest.fail("trained before checking outputs"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ck.npz").write_bytes(b"the old checkpoint")
    return tmp_path


@pytest.mark.parametrize("plot,fragments", [
    ("afile/p.png", ("afile is a file, not a folder",)),
    ("p.txt", ("end it in .png, .pdf, .svg",)),
    ("adir", ("is a folder",)),  # was: wrote adir.png and exited 0
])
def test_a_bad_plot_path_fails_before_training_and_keeps_the_checkpoint(workdir, capsys, no_training, plot,
                                                                       fragments):
    code, err = run_cli(capsys, "train", *TINY, "--save", "ck.npz", "--plot", plot)
    assert_one_line_error(code, err, f"--plot {plot}", *fragments)
    assert (workdir / "ck.npz").read_bytes() == b"the old checkpoint"
    assert sorted(os.listdir(workdir)) == ["adir", "afile", "ck.npz"]


@pytest.mark.parametrize("save,fragment", [("adir", "is a folder"), ("ck", "end it in .npz"),
                                           ("afile/ck.npz", "is a file, not a folder")])
def test_a_bad_save_path_fails_before_training(workdir, capsys, no_training, save, fragment):
    assert_one_line_error(*run_cli(capsys, "train", *TINY, "--save", save), f"--save {save}", fragment)


def test_the_default_plot_beside_save_is_checked_too(workdir, capsys, no_training):
    (workdir / "zen.png").mkdir()  # --save zen.npz draws to zen.png, a folder here
    assert_one_line_error(*run_cli(capsys, "train", *TINY, "--save", "zen.npz"), "--plot zen.png", "is a folder")


def test_an_output_that_is_the_input_text_is_refused(workdir, capsys, no_training):
    text = workdir / "zen.png"  # odd name for a text, but nothing stops a user from it
    text.write_text("Beautiful is better than ugly. " * 4)
    code, err = run_cli(capsys, "train", *TINY, "--text", "zen.png", "--plot", "zen.png")
    assert_one_line_error(code, err, "--plot zen.png and --text zen.png are the same file")
    assert text.read_text().startswith("Beautiful")


def test_task_and_analyze_check_their_outputs_first(workdir, capsys, no_training):
    assert_one_line_error(*run_cli(capsys, "task", "adding", "--plot", "adir"), "--plot adir", "is a folder")
    assert_one_line_error(*run_cli(capsys, "analyze", "-o", "afile"), "-o afile", "not a folder")
    assert_one_line_error(*run_cli(capsys, "analyze", "-o", "afile/sub"), "-o afile/sub", "is a file")


def test_a_plot_through_a_symlink_replaces_the_link_and_leaves_its_target(workdir, capsys):
    victim = workdir / "victim.png"
    victim.write_bytes(b"precious")
    (workdir / "link.png").symlink_to(victim)
    code, _ = run_cli(capsys, "train", *TINY, "--plot", "link.png")
    assert code == 0
    assert victim.read_bytes() == b"precious"
    link = workdir / "link.png"
    assert not link.is_symlink() and link.read_bytes().startswith(PNG_MAGIC)


def test_a_missing_output_folder_is_created_only_after_the_work(workdir, capsys):
    code, _ = run_cli(capsys, "train", *TINY, "--save", "out/sub/zen.npz")
    assert code == 0 and (workdir / "out/sub/zen.npz").is_file()
    assert (workdir / "out/sub/zen.png").read_bytes().startswith(PNG_MAGIC)
    assert not [n for n in os.listdir(workdir / "out/sub") if n.startswith(".tmp-")]


def test_analyze_writes_to_out_analysis_by_default():
    from tinygrad_rnn.cli import build_parser
    assert build_parser().parse_args(["analyze"]).output == os.path.join("out", "analysis")


def test_write_atomically_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old figure")
    os.chmod(target, 0o640)

    def failing_writer(f):
        f.write(b"half a fig")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="figure.png") as info:
        write_atomically(target, failing_writer)
    assert ".tmp-" not in str(info.value)  # the message names the target, never the temporary file
    assert str(info.value) == f"cannot write {str(target)!r}: No space left on device"  # no "[Errno 28]" prefix
    assert info.value.errno == 28
    assert target.read_bytes() == b"old figure"
    assert os.listdir(tmp_path) == ["figure.png"]
    write_atomically(target, lambda f: f.write(b"new figure"))
    assert target.read_bytes() == b"new figure"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # the target's mode is kept


def test_plot_losses_writes_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    target = tmp_path / "loss.png"
    target.write_bytes(b"old")

    def broken_savefig(self, *args, **kwargs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="loss.png"):
        train.plot_losses([train.History([3.0, 2.0], 1.0, 10, "a")], target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["loss.png"]
