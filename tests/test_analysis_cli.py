"""The plots and `tinygrad-rnn analyze`."""
import numpy as np
import pytest

from tinygrad_rnn.analysis import (gradient_flow, hello_sequence, plot_contributions, plot_gradient_flow,
                                   plot_step_grads)
from tinygrad_rnn.cli import main

pytest.importorskip("matplotlib")


def test_plots_are_figures_with_the_measured_values(tmp_path):
    model, xs, targets, _ = hello_sequence(repeats=2, hidden=4, init_scale=0.5)
    L, out = model.loss(xs, targets)
    L.backward()
    fig = plot_contributions(out)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (out.T, out.T) and image.mask[0, 1] and not image.mask[2, 1]
    flow = gradient_flow(out)
    fig = plot_gradient_flow(flow)
    measured = fig.axes[0].lines[0]
    np.testing.assert_allclose(measured.get_ydata(), flow.jacobian_norms)
    assert fig.axes[0].get_yscale() == "log" and "vanishing" in fig.axes[0].get_title()
    fig = plot_step_grads(out)
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    np.testing.assert_allclose(np.nan_to_num(heights), np.linalg.norm(out.tape.step_grads(model.W), axis=(1, 2)),
                               atol=1e-12)
    fig.savefig(tmp_path / "bars.pdf")
    assert (tmp_path / "bars.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("scale, verdict, fmt", [(0.5, "vanishing", "png"), (3.0, "exploding", "pdf")])
def test_analyze_writes_the_figures_and_the_verdict(tmp_path, capsys, scale, verdict, fmt):
    assert main(["analyze", "--example", "hello", "--init-scale", str(scale), "-o", str(tmp_path),
                 "--repeats", "4", "--truncate", "4", "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == f"verdict: {verdict}"
    assert "truncated BPTT (k = 4)" in printed and "T = 19" in printed
    magic = b"\x89PNG" if fmt == "png" else b"%PDF"
    for name in ("contributions", "gradient_flow", "step_grads"):
        assert (tmp_path / f"{name}.{fmt}").read_bytes()[:4] == magic


def test_analyze_rejects_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--example", "nope", "-o", str(tmp_path)])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    for bad in ("-1", "0", "nan", "inf"):  # checked by argparse, before any work
        with pytest.raises(SystemExit) as exit_:
            main(["analyze", "--init-scale", bad, "-o", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"argument --init-scale: expected a finite number > 0, got {bad}" in err
