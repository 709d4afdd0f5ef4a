"""`render` checks everything before it builds the network and writes its drawing atomically; the one
temp+rename writer lives in tinygrad_rnn.outputs (nn.checkpoint uses it, not the other way round)."""
import ast
import os
import pathlib
import sys
import tracemalloc

import numpy as np
import pytest

import viz.examples
import viz.render  # noqa: F401 (the module, which the package's viz.render function hides)
from test_cli_errors import assert_one_line_error, run_cli
from tinygrad_rnn import outputs
from viz import cli as render_cli

PACKAGE = pathlib.Path(outputs.__file__).parent
RENDER_MODULE = sys.modules["viz.render"]


@pytest.fixture
def no_building(monkeypatch):
    monkeypatch.setattr(viz.examples, "example", lambda *a, **k: pytest.fail("built the network before checking"))


@pytest.mark.parametrize("argv,fragments", [
    (["--steps", "100000000"], ("--steps 100000000", "815 GB of memory", "lower --steps or --hidden")),
    (["--hidden", "100000"], ("--hidden 100000", "200 GB of memory")),
    (["--steps", "200000"], ("200,000 steps takes about 2 min", "use --steps ≤ 100,000")),
    (["-o", "adir"], ("-o adir: is a folder",)),
    (["-o", "afile/x.svg"], ("afile is a file",)),
    (["-o", "x.xyz"], ("end it in .pdf",)),
])
def test_bad_requests_are_refused_before_the_network_is_built(argv, fragments, no_building, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tinygrad_rnn.cli_checks.available_memory", lambda: 24e9)  # the messages' numbers
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(*run_cli(capsys, "render", *argv), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


@pytest.mark.parametrize("steps,hidden", [(2000, 3), (400, 256)])
def test_the_memory_estimate_is_near_the_measured_peak(steps, hidden, monkeypatch):
    needed = {}
    monkeypatch.setattr(render_cli, "check_fits_in_memory", lambda what, n, advice: needed.setdefault("n", n))
    render_cli.check_steps(steps, hidden)
    tracemalloc.start()
    try:
        viz.examples.example("hello", steps=steps, hidden=hidden)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.5 * needed["n"] < peak < 1.1 * needed["n"]  # measured 0.85 and 0.78


def test_a_failing_render_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "g.dot"
    target.write_text("the old drawing")

    def half_written(graph, path, fmt):
        pathlib.Path(path).write_text("digraph { half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RENDER_MODULE, "write", half_written)
    assert_one_line_error(*run_cli(capsys, "render", "-o", target), "g.dot", "No space left on device")
    assert target.read_text() == "the old drawing" and os.listdir(tmp_path) == ["g.dot"]


def test_a_graphviz_failure_names_the_target_not_the_temp_file(tmp_path, monkeypatch, capsys):
    def graphviz_fails(graph, path, fmt):
        raise RuntimeError(f"viz: Graphviz failed to render {path} as {fmt}: syntax error")
    monkeypatch.setattr(RENDER_MODULE, "write", graphviz_fails)
    code, err = run_cli(capsys, "render", "-o", tmp_path / "g.dot")
    assert_one_line_error(code, err, f"Graphviz failed to render {tmp_path / 'g.dot'} as dot")
    assert ".tmp-" not in err and os.listdir(tmp_path) == []


def test_format_flag_writes_a_file_of_any_name(tmp_path, capsys):
    assert run_cli(capsys, "render", "--format", "dot", "-o", tmp_path / "drawing.txt")[0] == 0
    assert (tmp_path / "drawing.txt").read_text().startswith("digraph")


def test_atomic_path_hands_a_file_name_and_replaces_the_target_only_on_success(tmp_path):
    target = tmp_path / "fig.svg"
    target.write_text("old")
    os.chmod(target, 0o604)
    with pytest.raises(ValueError):
        with outputs.atomic_path(target) as tmp:
            pathlib.Path(tmp).write_text("half")
            raise ValueError("the writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["fig.svg"]
    with outputs.atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and outputs.is_temp_file(tmp)
        pathlib.Path(tmp).write_text("new")
    assert target.read_text() == "new" and os.stat(target).st_mode & 0o777 == 0o604


def test_the_atomic_writer_lives_in_outputs_and_checkpoint_uses_it():
    def imported(path):
        tree = ast.parse(path.read_text())
        return {(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("nn" in module for module in imported(PACKAGE / "outputs.py"))  # one way: nn -> outputs
    checkpoint = (PACKAGE / "nn" / "checkpoint.py").read_text()
    assert "write_atomically" in checkpoint and "mkstemp(" not in checkpoint and "os.replace(" not in checkpoint


def test_a_stale_temp_file_of_a_figure_is_removed_by_the_next_write(tmp_path):
    from test_checkpoint import _dead_pid
    stale = tmp_path / f".tmp-loss.png.{_dead_pid()}.abcd1234"
    stale.write_bytes(b"half a figure")
    outputs.write_atomically(tmp_path / "loss.png", lambda f: f.write(np.zeros(4).tobytes()))
    assert os.listdir(tmp_path) == ["loss.png"]
