"""The vanishing-gradient story told by the long-range tasks: ‖∂L_T/∂s_k‖ against the gap T − k for
several cells, at initialisation and after training (train.train_task), in one figure.

L_T is the loss of the last step (the adding problem's only loss; the copy task's last recalled symbol),
s = h (for the LSTM s = (h, c)); each curve is the mean over PROBE_SEQUENCES fresh sequences of the task
of each sequence's norm (flow.gradient_vs_gap). Used by `tinygrad-rnn task … --analyze` and
`tinygrad-rnn analyze --adding T`.
"""
import numpy as np

from ..data import adding_problem, copy_task
from ..nn.cells import CELLS
from .flow import gradient_vs_gap
from .plots import plot_gradient_vs_gap
from .recording import record

PROBE_SEQUENCES = 16
YLABEL = r"$\|\partial L_T/\partial s_k\|$  ($s = h$; LSTM: $s = (h, c)$)"


def analysis_bytes(T, n, hidden, cell, batch=1):
    """Peak memory of the analysis of a T-step recording (float64): the graph, T² contribution norms and
    their figure, T step Jacobians of the state width w (LSTM: h and c) and a chunk of their products."""
    width = 2 * hidden if cell == "lstm" else hidden
    gates = CELLS[cell].n_gates
    return 8 * (4 * T * T + 3 * T * batch * width * width + T * batch * (2 * n + 10 * gates * hidden))


def probe_batch(task, T, seed=0):
    """(inputs, targets, record keywords) of PROBE_SEQUENCES sequences of `task` ("adding" or "copy"),
    drawn from seed + 1 (train_task draws its batches from seed)."""
    rng = np.random.default_rng(seed + 1)
    if task == "adding":
        xs, y = adding_problem(T, PROBE_SEQUENCES, rng, dtype=np.float64)
        return xs, y, {"kind": "regression"}
    if task == "copy":
        inputs, targets = copy_task(T, PROBE_SEQUENCES, rng=rng)
        return inputs, targets, {}
    raise ValueError(f"analysis.tasks: task must be 'adding' or 'copy', got {task!r}")


def gap_curves(task, T, runs, seed=0):
    """[(label, gaps, norms)] for runs [(label, model)]: gradient_vs_gap of each model on the same
    probe batch (`probe_batch(task, T, seed)`), gaps 0 … T_steps − 1."""
    inputs, targets, keywords = probe_batch(task, T, seed)
    curves = []
    for label, model in runs:
        gaps, norms = gradient_vs_gap(record(model, inputs, targets, **keywords), part="state")
        curves.append((label, gaps, norms))
    return curves


def describe(curves):
    """One line per curve: the norm at gap 0, at the largest gap and their ratio."""
    return [f"{label}: ‖∂L_T/∂s_k‖ = {norms[0]:.3g} at gap 0, {norms[-1]:.3g} at gap {gaps[-1]} "
            f"(ratio {norms[-1] / norms[0]:.3g})" for label, gaps, norms in curves]


def plot_task_gaps(task, T, curves, hidden, updates):
    """The figure of `curves`, titled with the task, T, d and the training."""
    name = "Adding problem" if task == "adding" else "Copy task"
    cells = " vs ".join(dict.fromkeys(label.split()[0] for label, _, _ in curves))
    title = (f"{name}, T = {T}, d = {hidden}: vanishing gradient\n"
             f"{cells}, at initialisation and after {updates} Adam updates")
    return plot_gradient_vs_gap(curves, title, YLABEL)
