"""Figures of the analysis (matplotlib, imported only when a plot is made).

Each function returns an `AnalysisFigure` (a matplotlib Figure) built without pyplot: no global state,
no backend chosen (nothing here switches the backend), it saves with fig.savefig("name.png") or .pdf
anywhere, and it displays inline in a notebook with no %matplotlib magic (it has a PNG repr).
Labels are mathtext; every title names the run (the model, and `run=` e.g. the weight scale); colour
and y axes are logarithmic everywhere, so figures of different runs compare; step axes have integer ticks.
"""
import io

import numpy as np

from .contributions import contribution_norms, step_grads
from .flow import GradientFlow, gradient_flow
from .jacobians import recurrent_weight
from .recording import recording

_TINY = np.finfo(np.float64).tiny


def inline_figure(size):
    """A matplotlib Figure (constrained layout, `size` in inches) that shows itself in Jupyter/IPython as a
    PNG whatever the backend, with no %matplotlib magic and no pyplot (a plain Figure shows as text there)."""
    from matplotlib.figure import Figure

    class AnalysisFigure(Figure):
        def _repr_png_(self):
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return AnalysisFigure(figsize=size, layout="constrained")


def _figure(size):
    fig = inline_figure(size)
    return fig, fig.add_subplot()


def _integer_ticks(axis):
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def _math_name(name):
    """'W' → 'W', 'cell.weight_hh' → '\\mathrm{weight\\_hh}' (for mathtext)."""
    last = name.split(".")[-1]
    return last if len(last) == 1 else r"\mathrm{" + last.replace("_", r"\_") + "}"


def _title(what, rec, run):
    return f"{what}\n{rec.label}" + (f", {run}" if run else "")


def _parameter(rec, P):
    name, _ = rec.parameter(recurrent_weight(rec) if P is None else P, "plot")
    return name, _math_name(name)


def _note(ax, text):
    """An explanation under the x label (a second line of it), where it hides no data."""
    ax.set_xlabel(ax.get_xlabel() + "\n" + text, fontsize="small")


def _s0_is_zero(rec):
    return not np.any(rec.state0)


def plot_contributions(output, P=None, run=""):
    """Heat map of ‖∂L_t/∂P(k)‖ (rows: loss step t, columns: copy step k; default P: the recurrent
    weight), log colours. Vanishing gradients show as colour fading away from the diagonal."""
    from matplotlib.colors import LogNorm
    rec = recording(output)
    name, math = _parameter(rec, P)
    norms = contribution_norms(rec, name)
    T = len(norms)
    shown = np.ma.masked_where(norms <= 0, norms)  # k > t (and exact zeros) stay blank
    fig, ax = _figure((5.8, 4.8))
    if shown.count():
        image = ax.imshow(shown, origin="upper", cmap="viridis", interpolation="nearest",
                          norm=LogNorm(vmin=shown.min(), vmax=shown.max()),
                          extent=(0.5, T + 0.5, T + 0.5, 0.5))
        fig.colorbar(image, ax=ax, label=rf"$\|\partial L_t/\partial {math}^{{(k)}}\|_F$")
    ax.set_xlabel(rf"copy step $k$ (the ${math}^{{(k)}}$ used at step $k$)")
    ax.set_ylabel(r"loss step $t$")
    ax.set_title(_title(rf"BPTT contributions $\partial L_t/\partial {math}^{{(k)}}$, $k \leq t$", rec, run))
    _integer_ticks(ax.xaxis)
    _integer_ticks(ax.yaxis)
    if T > 1 and not np.any(norms[:, 0]) and _s0_is_zero(rec) and name == recurrent_weight(rec):
        _note(ax, rf"column $k = 1$ blank: $s_0 = 0$, so $\partial^+ s_1/\partial {math} = 0$")
    return fig


def plot_gradient_flow(flow, batch=0, run=""):
    """Decay curve: max_t ‖∂s_t/∂s_{t−gap}‖₂ against the gap, with the bound (γλ)^gap (vanilla cell) and
    the fitted rate r^gap (log y axis). `flow` is a GradientFlow or an RNNOutput/Recording."""
    if not isinstance(flow, GradientFlow):
        rec = recording(flow)
        flow = gradient_flow(rec, batch)
        label = rec.label
    else:
        label = flow.label
    fig, ax = _figure((5.8, 4.2))
    ax.semilogy(flow.gaps, np.maximum(flow.jacobian_norms, _TINY), "o-", markersize=3,
                label=r"$\max_t \|\partial s_t/\partial s_k\|_2$ (measured)")
    if np.isfinite(flow.gamma):
        ax.semilogy(flow.gaps, np.maximum(flow.bound, _TINY), "--", color="gray",
                    label=rf"bound $(\gamma\lambda)^{{t-k}}$, $\gamma\lambda = {flow.gamma * flow.lam:.3g}$")
    if len(flow.gaps) and np.isfinite(flow.rate) and flow.rate > 0:
        logs = np.log(np.maximum(flow.jacobian_norms, _TINY))
        intercept = np.mean(logs - flow.gaps * np.log(flow.rate))
        ax.semilogy(flow.gaps, np.exp(intercept + flow.gaps * np.log(flow.rate)), ":", color="C3",
                    label=rf"fit $C\,r^{{t-k}}$, $r = {flow.rate:.3g}$")
    ax.set_xlabel(r"gap $t - k$ (steps back in time)")
    ax.set_ylabel(r"spectral norm $\|\partial s_t/\partial s_k\|_2$")
    state = "" if flow.part == "state" else f" ({flow.part})"
    ax.set_title(f"Gradient flow through the states{state}: {flow.verdict}\n{label}" + (f", {run}" if run else ""))
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize="small")
    return fig


def plot_step_grads(output, P=None, run=""):
    """Bars of ‖∂L/∂P(t)‖_F per copy step t (default P: the recurrent weight) on a log axis: how much each
    step's copy contributes to ∂L/∂P = Σ_t ∂L/∂P(t). Recomputed, so it works after backward."""
    rec = recording(output)
    name, math = _parameter(rec, P)
    grads = step_grads(rec, name)
    per_step = np.sqrt((grads.reshape(len(grads), -1) ** 2).sum(axis=1))
    fig, ax = _figure((5.8, 3.8))
    steps = np.arange(1, len(per_step) + 1)
    ax.bar(steps, np.where(per_step > 0, per_step, np.nan), color="C0")
    ax.set_yscale("log")
    ax.set_xlim(0.5, len(per_step) + 0.5)
    ax.set_xlabel(r"step $t$")
    ax.set_ylabel(rf"$\|\partial L/\partial {math}^{{(t)}}\|_F$")
    ax.set_title(_title(rf"Per-step copies: $\partial L/\partial {math} = \sum_t \partial L/\partial {math}^{{(t)}}$",
                        rec, run))
    _integer_ticks(ax.xaxis)
    if len(per_step) and per_step[0] == 0 and _s0_is_zero(rec) and name == recurrent_weight(rec):
        _note(ax, rf"no bar at $t = 1$: $s_0 = 0$, so $\partial L/\partial {math}^{{(1)}} = 0$")
    return fig


def plot_gradient_vs_gap(curves, title="", ylabel=r"$\|\partial L_T/\partial h_k\|$"):
    """One figure of several runs: `curves` is a list of (label, gaps, norms), e.g. from
    flow.gradient_vs_gap; log y axis, integer gaps."""
    fig, ax = _figure((6.4, 4.4))
    for i, (label, gaps, norms) in enumerate(curves):
        style = "-" if "after" in label or "trained" in label else "--"
        ax.semilogy(gaps, np.maximum(norms, _TINY), style, color=f"C{i // 2}" if len(curves) > 2 else f"C{i}",
                    label=label)
    ax.set_xlabel(r"gap $T - k$ (steps back from the loss)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize="small")
    return fig
