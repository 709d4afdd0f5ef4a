"""notebooks/bptt.ipynb, the lecture walkthrough, executed top to bottom by a real Jupyter kernel (nbclient +
ipykernel): no cell may fail or write to stderr, every figure cell must display an image, and the numbers it
prints must say what the lecture says (the copies sum to ∂L/∂W, the explicit/implicit split adds up, only the
LSTM solves the adding problem)."""
import pathlib
import re
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="the `test` extra installs nbformat, nbclient, ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the `test` extra installs nbformat, nbclient, ipykernel")
pytest.importorskip("ipykernel", reason="the `test` extra installs nbformat, nbclient, ipykernel")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "bptt.ipynb"
IMAGE_TYPES = ("image/png", "image/svg+xml")
# a cell whose value is a drawing or a plot: viz.draw(...) is a graphviz.Digraph, the plot_* calls return Figures
FIGURE_CALL = re.compile(r"^(viz\.draw|analysis\.plot_\w+|plot_losses)\(", re.M)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel's own CPU time, appended as a last cell: wall time on a machine shared with other jobs says little
    notebook.cells.append(nbformat.v4.new_code_cell("import time; print('kernel CPU seconds', time.process_time())"))
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    wall = time.perf_counter() - start
    cpu = float(re.search(r"kernel CPU seconds (\S+)", _text(notebook.cells.pop())).group(1))
    return notebook, wall, cpu


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _printed(notebook):
    return "".join(_text(c) for c in notebook.cells if c.cell_type == "code")


def test_committed_without_outputs():
    # outputs are made by running it; committed outputs would go stale and bloat every diff
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not c.outputs and c.execution_count is None for c in notebook.cells if c.cell_type == "code")


def test_runs_in_under_a_minute_without_warnings(executed):
    notebook, wall, cpu = executed
    assert cpu < 60  # about 12 s on a quiet 2-core machine
    assert wall < 180
    stderr = [o.text for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []  # no warnings (matplotlib backend, tqdm's "IProgress not found", ...)


def test_every_figure_cell_shows_an_image(executed):
    notebook = executed[0]
    figure_cells = [c for c in notebook.cells if c.cell_type == "code" and FIGURE_CALL.search(c.source)]
    assert len(figure_cells) >= 8  # 3 graph drawings, 4 analysis plots, the adding-problem curves
    for cell in figure_cells:
        shown = [t for o in cell.outputs for t in o.get("data", {}) if t in IMAGE_TYPES]
        assert shown, f"figure cell shows no image:\n{cell.source}"
    drawings = [c for c in figure_cells if "viz.draw(" in c.source]
    assert all("image/svg+xml" in o.data for c in drawings for o in c.outputs if o.output_type == "execute_result")
    # the unrolled hello graph as laid out: step boxes left to right in time order, each copy W(t) in box t
    svg = next(o.data["image/svg+xml"] for o in drawings[1].outputs if o.output_type == "execute_result")
    box_x = _label_positions(svg, r"t = (\d+)")
    copy_x = _label_positions(svg, r"W\((\d+)\)")
    assert sorted(box_x) == sorted(copy_x) == [1, 2, 3, 4]
    assert sorted(box_x, key=box_x.get) == [1, 2, 3, 4]
    for t, x in copy_x.items():
        assert min(box_x, key=lambda step: abs(box_x[step] - x)) == t


def _label_positions(svg, pattern):
    """{step: x} of the SVG text elements whose whole text matches pattern (its group: the step)."""
    found = re.findall(rf'<text[^>]*\sx="([-\d.]+)"[^>]*>{pattern}</text>', svg)
    return {int(step): float(x) for x, step in found}


def test_printed_numbers_match_the_lecture(executed):
    text = _printed(executed[0])
    assert "copies of W: ['W(1)', 'W(2)', 'W(3)', 'W(4)']" in text
    assert "after 300 SGD epochs: predicts 'ello'" in text
    copies_sum = float(re.search(r"max \|Σ_t ∂L/∂W\(t\) − ∂L/∂W\| = (\S+)", text).group(1))
    assert copies_sum < 1e-6  # float32 network
    assert "‖∂L/∂W(1)‖ = 0.00000" in text  # s(0) = 0
    assert "gradcheck passed" in text
    split = float(re.search(r"max \|Σ_k parts − ∂s₄/∂W\| = (\S+)", text).group(1))
    assert split < 1e-12
    assert float(re.search(r"finite differences agree to (\S+)", text).group(1)) < 1e-6  # analysis.decompose
    terms = re.findall(r"^k = (\d): ‖∂s₄/∂s_\d · ∂⁺s_\d/∂W‖ = (\S+)", text, re.M)
    table = re.findall(r"^\s+(\d)\s+∂s_4/∂s_\d · ∂⁺s_\d/∂W\s+\w+\s+(\S+)", text, re.M)
    assert len(terms) == len(table) == 4
    assert all(abs(float(mine) - float(theirs)) < 1e-4 for (_, mine), (_, theirs) in zip(terms, table))
    assert float(re.search(r"max \|Π_j .*?\| = (\S+)", text).group(1)) < 1e-12
    measured, bound = (float(v) for v in re.search(r"‖∂s_12/∂s_4‖₂ = (\S+) ≤ \(γλ\)\^8 = (\S+)", text).groups())
    assert measured <= bound
    assert "→ vanishing" in text and "→ exploding" in text
    assert "truncated gradients match finite differences" in text
    assert "'h' -> 'hello'" in text
    mse = {cell: float(v) for cell, v in re.findall(r"^(rnn|lstm)\s*: MSE (\S+)", text, re.M)}
    assert mse["lstm"] < 0.05 < 1 / 6 * 0.9 < mse["rnn"]  # only the LSTM carries the first number 15+ steps


def test_progress_bars_in_jupyter_do_not_warn(tmp_path):
    # tqdm.auto in a kernel without ipywidgets falls back to the text bar, warning "IProgress not found" on the
    # way; train_loop keeps the bar and drops the warning, and progress=False prints nothing at all
    cells = ["from tinygrad_rnn.train import train_loop",
             "train_loop(lambda: 1.0, 3, desc='quiet-run', progress=False).losses",
             "train_loop(lambda: 1.0, 3, desc='shown-run', progress=True).losses"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    _, quiet, shown = notebook.cells
    assert [o.output_type for o in quiet.outputs] == ["execute_result"]
    stderr = "".join(o.text for o in shown.outputs if o.output_type == "stream" and o.name == "stderr")
    assert "shown-run" in stderr and "IProgress" not in stderr and "Warning" not in stderr
