"""The rest of the course notes: the ∂s_t/∂W expansion term by term, the column-vector convention, the
"deep" slide as a computed loss, the three truncations (segments, τ terms per loss, TBPTT(k1, k2)) for
every cell, the analyze CLI (--cell, --example deep, --load, --adding) and what the figures show."""
import pathlib

import numpy as np
import pytest

from tinygrad_rnn import nn
from tinygrad_rnn.analysis import (contribution_norms, contributions, decompose, explicit_grad, plot_contributions,
                                   plot_gradient_flow, plot_step_grads, state_jacobian, step_jacobian, tbptt,
                                   truncated_bptt, truncated_contributions, truncated_gradcheck,
                                   truncation_bias, truncation_mask)
from tinygrad_rnn.analysis.examples import (DEEP_SLIDE_PREDICTED, DEEP_SLIDE_TRUE, deep_sequence,
                                            probability_table, slide_loss)
from tinygrad_rnn.cli import main

EPS = 1e-6


def vanilla(T=5, d=3, seed=4, s0=False):
    rng = np.random.default_rng(seed)
    model = nn.RNN(4, d, 4, seed=seed, dtype=np.float64)
    model.W.data = model.W.data * 2
    xs = np.eye(4)[rng.integers(0, 4, size=T)]
    targets = rng.integers(0, 4, size=T)
    start = rng.uniform(-0.5, 0.5, d) if s0 else None
    return model, xs, targets, start


def states_with(model, xs, W, s0):
    s, out = np.zeros(model.hidden_size) if s0 is None else s0, []
    for x in xs:
        s = np.tanh(x @ model.U.data + s @ W + model.b.data)
        out.append(s)
    return out


# --- decompose: the slide's expansion of ∂s_4/∂W ----------------------------------------------------

@pytest.mark.parametrize("convention", ["row", "column"])
def test_decompose_terms_sum_to_the_total_derivative(convention):
    model, xs, targets, s0 = vanilla(s0=True)
    _, out = model.loss(xs, targets, s0)
    D = decompose(out, 4, convention=convention)
    assert D.terms.shape == (4, 3, 3, 3) and D.max_error < 1e-8
    # an independent finite difference, in numpy, of s_4 with respect to W
    numeric = np.zeros((3, 3, 3))
    for q in range(3):
        for r in range(3):
            E = np.zeros((3, 3))
            E[q, r] = EPS
            numeric[:, q, r] = (states_with(model, xs, model.W.data + E, s0)[3]
                                - states_with(model, xs, model.W.data - E, s0)[3]) / (2 * EPS)
    if convention == "column":
        numeric = np.swapaxes(numeric, 1, 2)
    np.testing.assert_allclose(D.terms.sum(axis=0), numeric, atol=1e-8)
    # k = t is the explicit part; k < t the implicit paths ∂s_4/∂s_k · ∂⁺s_k/∂W
    np.testing.assert_allclose(D.terms[3], explicit_grad(out, 4, convention=convention), atol=1e-14)
    J = state_jacobian(out, 4, 2)
    E2 = explicit_grad(out, 2)
    term = np.tensordot(J, E2, axes=1)
    np.testing.assert_allclose(D.terms[1], term if convention == "row" else np.swapaxes(term, 1, 2), atol=1e-14)
    np.testing.assert_allclose(D.norms, np.linalg.norm(D.terms.reshape(4, -1), axis=1))
    table = D.table()
    assert "explicit" in table and table.count("implicit") == 3 and f"{D.norms[0]:.4e}" in table
    # ∂L_4/∂W = ∂L_4/∂s_4 · ∂s_4/∂W: the row t = 4 of the contributions, summed over k
    assert str(D) == table


def test_decompose_for_a_gated_cell_sums_too():
    rng = np.random.default_rng(0)
    model = nn.RNN(4, 2, 4, cell="lstm", seed=1, dtype=np.float64)
    _, out = model.loss(np.eye(4)[rng.integers(0, 4, 4)], rng.integers(0, 4, 4))
    D = decompose(out, 3)
    assert D.terms.shape == (3, 4, 2, 8) and D.max_error < 1e-8


# --- the column-vector convention -----------------------------------------------------------------------

def test_column_convention_is_the_transpose_of_the_row_one_and_indexes_like_the_notes():
    model, xs, targets, s0 = vanilla(s0=True)
    L, out = model.loss(xs, targets, s0)
    L.backward()
    s = [s0] + states_with(model, xs, model.W.data, s0)
    k = 3
    a = xs[k - 1] @ model.U.data + s[k - 1] @ model.W.data + model.b.data
    sp = 1 - np.tanh(a) ** 2
    W_notes = model.W.data.T  # the notes' W (column vectors: a = W s + …)
    np.testing.assert_allclose(step_jacobian(out, k, convention="column"), np.diag(sp) @ W_notes, atol=1e-14)
    np.testing.assert_allclose(step_jacobian(out, k), np.diag(sp) @ model.W.data.T, atol=1e-14)
    col, row = explicit_grad(out, k, convention="column"), explicit_grad(out, k)
    np.testing.assert_allclose(col, np.swapaxes(row, 1, 2))
    for p in range(3):
        for q in range(3):
            for r in range(3):
                assert col[p, q, r] == pytest.approx(sp[p] * s[k - 1][r] if p == q else 0.0, abs=1e-14)
                assert row[p, q, r] == pytest.approx(sp[p] * s[k - 1][q] if r == p else 0.0, abs=1e-14)
    C_col = contributions(out, model.W, convention="column")
    np.testing.assert_allclose(C_col.sum(axis=(0, 1)), model.W.grad.T, atol=1e-12)
    with pytest.raises(ValueError, match="convention must be 'row' or 'column'"):
        explicit_grad(out, 1, convention="columns")


# --- the "deep" slide ---------------------------------------------------------------------------------

def test_the_deep_slide_table_as_a_computed_loss():
    L, per_step = slide_loss()
    np.testing.assert_allclose(per_step, -np.log([0.7, 0.7, 0.7, 0.7]))
    assert L == pytest.approx(-4 * np.log(0.7))
    table = probability_table(DEEP_SLIDE_PREDICTED, DEEP_SLIDE_TRUE)
    assert "<stop>" in table and f"{L:.4f}" in table
    model, xs, targets, vocab = deep_sequence()
    assert vocab.decode(targets) == "eep<stop>" and xs.shape == (4, 4)
    Lm, out = model.loss(xs, targets)
    logits = np.stack([y.data for y in out.logits])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # the same formula, the model's own table
    assert Lm.item() == pytest.approx(-np.log(p[np.arange(4), targets]).sum())


# --- truncation: segments, τ terms per loss, TBPTT(k1, k2), every cell ---------------------------------

def gated(cell, T=7, B=2, seed=5):
    rng = np.random.default_rng(seed)
    model = nn.RNN(4, 3, 4, cell=cell, seed=seed, dtype=np.float64)
    for p in model.parameters():
        p.data = p.data * 2
    return model, np.eye(4)[rng.integers(0, 4, (T, B))], rng.integers(0, 4, (T, B))


def test_masks_of_the_three_truncations():
    T = 7
    t, j = np.meshgrid(np.arange(1, T + 1), np.arange(1, T + 1), indexing="ij")
    np.testing.assert_array_equal(truncation_mask(T, tau=3), (t - j >= 0) & (t - j < 3))
    np.testing.assert_array_equal(truncation_mask(T, 3), ((t - 1) // 3 == (j - 1) // 3) & (j <= t))
    np.testing.assert_array_equal(truncation_mask(T, k1=3, k2=3), truncation_mask(T, 3))
    np.testing.assert_array_equal(truncation_mask(T, k1=1, k2=4), truncation_mask(T, tau=4))
    M = truncation_mask(T, k1=2, k2=4)
    assert M[3, 0] and not M[4, 0] and M[5, 2] and not M[5, 1]  # update at 4 reaches 1 … 4, at 6 reaches 3 … 6
    with pytest.raises(ValueError, match="need k2 ≥ k1"):
        truncation_mask(T, k1=3, k2=2)
    with pytest.raises(ValueError, match="give exactly one of"):
        truncation_mask(T, 2, tau=2)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("scheme", [dict(k=3), dict(k1=2, k2=4), dict(k1=1, k2=2)])
def test_truncated_gradients_are_the_masked_contributions_for_every_cell(cell, scheme):
    model, xs, targets = gated(cell)
    model.zero_grad()
    if "k" in scheme:
        losses = truncated_bptt(model, xs, targets, scheme["k"])
    else:
        losses = tbptt(model, xs, targets, scheme["k1"], scheme["k2"])
    L, out = model.loss(xs, targets)
    assert sum(losses) == pytest.approx(L.item())
    for P in model.parameters():
        np.testing.assert_allclose(truncated_contributions(out, P, **scheme).sum(axis=(0, 1)), P.grad, atol=1e-12)
    assert truncated_gradcheck(model, xs, targets, **scheme)


def test_lstm_truncation_carries_h_and_c_like_pytorch():
    torch = pytest.importorskip("torch")
    model, xs, targets = gated("lstm")
    module = model.to_torch()
    state = None
    for start in range(0, 7, 3):
        logits, state = module(torch.from_numpy(xs[start:start + 3]), state)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.from_numpy(targets[start:start + 3]).reshape(-1),
                                          reduction="sum").backward()
        state = tuple(s.detach() for s in state)  # PyTorch's truncated BPTT detaches (h, c)
    model.zero_grad()
    truncated_bptt(model, xs, targets, 3)
    np.testing.assert_allclose(model.cell.weight_hh.grad, module.rnn.weight_hh_l0.grad.numpy().T, atol=1e-12)
    np.testing.assert_allclose(model.cell.weight_ih.grad, module.rnn.weight_ih_l0.grad.numpy().T, atol=1e-12)


def test_truncation_bias_for_each_scheme():
    model, xs, targets = gated("lstm")
    L, out = model.loss(xs, targets)
    L.backward()
    for scheme, text in ((dict(k=3), "segments of k = 3"), (dict(tau=2), "τ = 2 terms per loss"),
                         (dict(k1=2, k2=4), "TBPTT(k1 = 2, k2 = 4)")):
        bias = truncation_bias(out, **scheme)
        np.testing.assert_allclose(bias.full.sum(axis=0), model.cell.weight_hh.grad, atol=1e-12)
        masked = truncated_contributions(out, model.cell.weight_hh, **scheme).sum(axis=0)
        np.testing.assert_allclose(bias.truncated, masked, atol=1e-12)
        assert text in bias.report() and bias.relative > 0
    assert truncation_bias(out, tau=7).relative == 0


# --- the CLI and the figures ----------------------------------------------------------------------------

def test_analyze_deep_and_gated_cells(tmp_path, capsys):
    assert main(["analyze", "--example", "deep", "--hidden", "3", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "the slide's table" in printed and "L = Σ_t −log y_tc = 1.4267" in printed
    assert "T = 4" in printed and printed.strip().endswith(("vanishing", "stable", "exploding"))
    assert main(["analyze", "--cell", "lstm", "--repeats", "2", "-o", str(tmp_path / "lstm")]) == 0
    printed = capsys.readouterr().out
    assert "cell.weight_hh" in printed and (tmp_path / "lstm" / "contributions.png").exists()
    assert main(["analyze", "--cell", "gru", "--init-scale", "2", "-o", str(tmp_path)]) == 2
    assert "--cell gru has no W" in capsys.readouterr().err


def test_analyze_a_checkpoint_on_its_own_text(tmp_path, capsys):
    from tinygrad_rnn.data import CharVocab
    from tinygrad_rnn.train import save_char_lm
    text = "abcabcabcabc"
    (tmp_path / "text.txt").write_text(text)
    vocab = CharVocab.from_text(text)
    model = nn.RNN(len(vocab), 5, len(vocab), cell="gru", seed=0)
    save_char_lm(str(tmp_path / "m.npz"), model, vocab)
    assert main(["analyze", "--load", str(tmp_path / "m.npz"), "--text", str(tmp_path / "text.txt"),
                 "--length", "8", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "first 8 characters" in printed and (tmp_path / "out" / "gradient_flow.png").exists()
    assert main(["analyze", "--load", str(tmp_path / "missing.npz"), "-o", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_analyze_adding_writes_the_rnn_vs_lstm_figure(tmp_path, capsys):
    assert main(["analyze", "--adding", "8", "--train-steps", "2", "--hidden", "4", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("adding T = 8") == 4
    from matplotlib.image import imread
    image = imread(tmp_path / "gradient_vs_gap.png")
    assert image.shape[0] > 300 and image.std() > 0.05  # a drawn figure, not a blank page


def test_figures_name_the_run_use_mathtext_log_axes_integer_ticks_and_show_inline():
    model, xs, targets, _ = vanilla(T=9)
    _, out = model.loss(xs, targets)
    fig = plot_contributions(out, run="W = 2·default")
    ax = fig.axes[0]
    assert "nn.RNN(cell='rnn'" in ax.get_title() and "W = 2·default" in ax.get_title()
    assert r"$\|\partial L_t/\partial W^{(k)}\|_F$" in fig.axes[1].get_ylabel()
    assert "column $k = 1$ blank: $s_0 = 0$" in ax.get_xlabel()  # ∂⁺s_1/∂W = s_0ᵀ… = 0 explained
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert fig._repr_png_()[:4] == b"\x89PNG"  # a notebook shows it without %matplotlib
    bars = plot_step_grads(out)
    assert bars.axes[0].get_yscale() == "log" and "no bar at $t = 1$" in bars.axes[0].get_xlabel()
    flow = plot_gradient_flow(out)
    assert flow.axes[0].get_yscale() == "log"
    assert "$(\\gamma\\lambda)^{t-k}$" in flow.axes[0].get_legend().texts[1].get_text()


def test_nothing_in_the_package_chooses_a_matplotlib_backend():
    package = pathlib.Path(__file__).resolve().parents[1] / "tinygrad_rnn"
    offenders = [str(p) for p in package.rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_figures_of_gated_cells_show_their_weight_their_run_and_log_scales(cell):
    from matplotlib.colors import LogNorm
    model, xs, targets = gated(cell, T=6, B=1)
    _, out = model.loss(xs, targets)
    heat = plot_contributions(out, run="scale 2")
    ax = heat.axes[0]
    assert f"nn.RNN(cell='{cell}', d=3)" in ax.get_title() and "scale 2" in ax.get_title()
    assert r"\mathrm{weight\_hh}^{(k)}" in ax.get_title()
    assert r"$\|\partial L_t/\partial \mathrm{weight\_hh}^{(k)}\|_F$" in heat.axes[1].get_ylabel()
    image = ax.get_images()[0]
    assert isinstance(image.norm, LogNorm)  # the same kind of colour scale as the vanilla cell's figure
    norms = contribution_norms(out, "cell.weight_hh")
    assert image.norm.vmin == pytest.approx(norms[norms > 0].min()) and image.norm.vmax == pytest.approx(norms.max())
    # h_0 = 0, so the weight_hh used at step 1 multiplies zeros: the blank column is explained
    assert "column $k = 1$ blank: $s_0 = 0$" in ax.get_xlabel()
    heat.canvas.draw()
    for axis in (ax.get_xticks(), ax.get_yticks()):
        assert all(float(t).is_integer() for t in axis)
    bars = plot_step_grads(out).axes[0]
    assert bars.get_yscale() == "log" and "no bar at $t = 1$" in bars.get_xlabel() and cell in bars.get_title()
    heights = [p.get_height() for p in bars.patches]
    assert np.isnan(heights[0]) and np.all(np.array(heights[1:]) > 0)
    flow = plot_gradient_flow(out).axes[0]
    assert flow.get_yscale() == "log" and f"cell='{cell}'" in flow.get_title()
    labels = [t.get_text() for t in flow.get_legend().texts]
    assert not any("bound" in label for label in labels)  # (γλ)^{t−k} bounds only the vanilla cell
    assert flow.get_xlabel() == r"gap $t - k$ (steps back in time)"
    for axes in (bars, flow):  # steps and gaps are whole numbers
        axes.figure.canvas.draw()
        assert all(float(t).is_integer() for t in axes.get_xticks())


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_truncation_bias_for_each_scheme_and_the_other_cells(cell):
    model, xs, targets = gated(cell)
    L, out = model.loss(xs, targets)
    L.backward()
    P = model.W if cell == "rnn" else model.cell.weight_hh
    for scheme in (dict(k=3), dict(tau=2), dict(k1=2, k2=4)):
        bias = truncation_bias(out, **scheme)
        C = contributions(out, P)
        mask = truncation_mask(7, **scheme)
        # the formula: what is left out is the sum of the contributions outside the mask
        np.testing.assert_allclose(bias.full - bias.truncated, (C * ~mask[..., None, None]).sum(axis=0), atol=1e-12)
        np.testing.assert_allclose(bias.full.sum(axis=0), P.grad, atol=1e-12)


def test_figures_show_inline_in_a_kernel_without_a_matplotlib_magic(tmp_path):
    # a real Jupyter kernel, no %matplotlib and no pyplot: each analysis figure is the cell's PNG
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    setup = ("from tinygrad_rnn import analysis\n"
             "m, x, y, _ = analysis.hello_sequence(repeats=1, hidden=4)\n"
             "out = m.loss(x, y)[1]")
    calls = ["analysis.plot_contributions(out)", "analysis.plot_step_grads(out)", "analysis.plot_gradient_flow(out)",
             "analysis.plot_gradient_vs_gap([('rnn', *analysis.gradient_vs_gap(out))])",
             "import sys; print(sorted(m for m in sys.modules if m.startswith('matplotlib.pyplot')))"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in [setup] + calls])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in notebook.cells[1:-1]:
        results = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert len(results) == 1 and results[0].data["image/png"], cell.source
    assert notebook.cells[-1].outputs[0].text.strip() == "[]"  # pyplot never imported
