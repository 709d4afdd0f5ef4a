"""Figures of the analysis (matplotlib, imported only when a plot is made).

Each function returns a matplotlib Figure built without pyplot (no global state, no GUI backend), so
it shows in a notebook and saves with fig.savefig("name.png") or .pdf anywhere.
"""
import numpy as np

from .contributions import contribution_norms, step_grads
from .flow import GradientFlow, gradient_flow


def _figure(size):
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _label(output, P):
    P = getattr(output.model, "W", None) if P is None else P
    return P, P.name or "P"


def plot_contributions(output, P=None):
    """Heat map of ‖∂L_t/∂P(k)‖ (rows: loss step t, columns: copy step k; default P = W), log colours.
    Vanishing gradients show as colour fading away from the diagonal, exploding ones as growth."""
    from matplotlib.colors import LogNorm
    P, name = _label(output, P)
    norms = contribution_norms(output, P)
    T = len(norms)
    shown = np.ma.masked_where(norms <= 0, norms)  # k > t (and exact zeros) stay blank
    fig, ax = _figure((5.6, 4.6))
    if shown.count():
        image = ax.imshow(shown, origin="upper", cmap="viridis", interpolation="nearest",
                          norm=LogNorm(vmin=shown.min(), vmax=shown.max()),
                          extent=(0.5, T + 0.5, T + 0.5, 0.5))
        fig.colorbar(image, ax=ax, label=f"‖∂L_t/∂{name}(k)‖_F")
    ax.set_xlabel(f"copy step k (the {name}(k) used at step k)")
    ax.set_ylabel("loss step t")
    ax.set_title(f"BPTT contributions ∂L_t/∂{name}(k), k ≤ t")
    ticks = np.unique(np.linspace(1, T, min(T, 8)).round().astype(int))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    return fig


def plot_gradient_flow(flow, batch=0):
    """Decay curve: max_t ‖∂s_t/∂s_{t−gap}‖₂ against the gap, with the bound (γλ)^gap and the fitted
    rate r^gap (log y axis). `flow` is a GradientFlow or an RNNOutput (then gradient_flow(flow, batch))."""
    if not isinstance(flow, GradientFlow):
        flow = gradient_flow(flow, batch)
    fig, ax = _figure((5.6, 4.0))
    tiny = np.finfo(np.float64).tiny
    ax.semilogy(flow.gaps, np.maximum(flow.jacobian_norms, tiny), "o-", label="max_t ‖∂s_t/∂s_k‖₂ (measured)")
    ax.semilogy(flow.gaps, np.maximum(flow.bound, tiny), "--", color="gray",
                label=f"bound (γλ)^(t−k), γλ = {flow.gamma * flow.lam:.3g}")
    if len(flow.gaps) and np.isfinite(flow.rate) and flow.rate > 0:
        logs = np.log(np.maximum(flow.jacobian_norms, tiny))
        intercept = np.mean(logs - flow.gaps * np.log(flow.rate))
        ax.semilogy(flow.gaps, np.exp(intercept + flow.gaps * np.log(flow.rate)), ":", color="C3",
                    label=f"fit C·r^(t−k), r = {flow.rate:.3g}")
    ax.set_xlabel("gap t − k (steps back in time)")
    ax.set_ylabel("spectral norm")
    ax.set_title(f"Gradient flow through the states: {flow.verdict}")
    ax.legend(fontsize="small")
    return fig


def plot_step_grads(output, P=None):
    """Bars of ‖∂L/∂P(t)‖_F per copy step t (default P = W): how much each step's copy contributes to
    ∂L/∂P = Σ_t ∂L/∂P(t). Recomputed (the column sums of the contributions), so it works after backward."""
    P, name = _label(output, P)
    grads = step_grads(output, P)
    per_step = np.sqrt((grads.reshape(len(grads), -1) ** 2).sum(axis=1))
    fig, ax = _figure((5.6, 3.6))
    steps = np.arange(1, len(per_step) + 1)
    ax.bar(steps, per_step, color="C0")
    positive = per_step[per_step > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        ax.set_yscale("log")  # a linear axis would show one bar (∂L/∂W(1) = 0 when s0 = 0: no bar there)
    ax.set_xlabel("step t")
    ax.set_ylabel(f"‖∂L/∂{name}(t)‖_F")
    ax.set_title(f"Per-step copies: ∂L/∂{name} = Σ_t ∂L/∂{name}(t)")
    return fig
