"""gradcheck: the engine's gradients against central finite differences, in float64."""
import numpy as np

from .tensor import Tensor, no_grad, topological_order


class GradcheckError(AssertionError):
    pass


def _scalar_objective(fn, inputs, projection):
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.data.size == 1:
        return out.sum()
    if projection[0] is None or projection[0].shape != out.shape:
        projection[0] = np.random.default_rng(0).standard_normal(out.shape)
    return (out * projection[0]).sum()  # a fixed random projection checks the whole Jacobian's action


def finite_differences(objective, array, eps):
    """Central differences (f(x + eps) − f(x − eps)) / 2eps of objective() for every element of `array`,
    which it perturbs in place (and restores)."""
    numeric = np.zeros_like(array)
    flat, nflat = array.reshape(-1), numeric.reshape(-1)
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = objective()
        flat[j] = orig - eps
        minus = objective()
        flat[j] = orig
        nflat[j] = (plus - minus) / (2 * eps)
    return numeric


def check_close(analytic, numeric, what, analytic_label, numeric_label, atol, rtol, eps):
    """Raise GradcheckError at the worst element where |analytic − numeric| > atol + rtol·|numeric|.

    A NaN or Inf on either side always fails (as torch.autograd.gradcheck): `err > 0` is False for NaN,
    so non-finite elements are looked for first, and reported before any finite mismatch."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    nonfinite = ~(np.isfinite(analytic) & np.isfinite(numeric))
    if nonfinite.any():
        flat_index = int(np.flatnonzero(nonfinite)[0])
        note = (f" — a non-finite gradient (nan or inf) never passes; {int(nonfinite.sum())} of "
                f"{nonfinite.size} elements are non-finite")
    else:
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if not (err.size and err.max() > 0):
            return
        flat_index, note = int(err.argmax()), ""
    worst = tuple(int(i) for i in np.unravel_index(flat_index, analytic.shape))
    raise GradcheckError(f"{what} at element {worst}: {analytic_label} {analytic[worst]:.8g}, "
                         f"{numeric_label} {numeric[worst]:.8g}{note} (atol={atol}, rtol={rtol}, eps={eps})")


def check_finite_value(value, what):
    """Raise GradcheckError if the checked function's value is NaN or Inf: its gradient means nothing
    there, and finite differences of it are NaN or Inf too."""
    if not np.all(np.isfinite(value)):
        raise GradcheckError(f"{what}: the function's value is {float(np.asarray(value).reshape(-1)[0]):.8g} "
                             f"at the inputs (not finite): a gradient check needs a finite value")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare ∂fn/∂input from backward with (f(x+eps) − f(x−eps)) / 2eps for every element.

    fn(*inputs) returns a Tensor (non-scalar outputs are checked through a fixed random projection).
    Inputs are switched to float64 for the check and restored afterwards, with their `.grad`.
    Returns True, or raises GradcheckError naming the input, the worst element and both values; a NaN or
    Inf value of fn, analytic gradient or finite difference is always a failure.
    """
    inputs = list(inputs)
    targets = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    names = [x.name or f"input {i}" for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not targets:
        raise ValueError("gradcheck: no input requires grad")
    saved = [(x.data, x._grad) for x in targets]
    projection = [None]
    try:
        for x in targets:
            x.data, x._grad = x.data.astype(np.float64), None
        objective = _scalar_objective(fn, inputs, projection)
        check_finite_value(objective.data, "gradcheck")
        # other leaves of fn's graph (a model's other weights) get gradients too: restore theirs after
        chosen = set(targets)  # a set finds tensors by identity (`in` on a list would compare them elementwise)
        others = [(x, x._grad) for x in topological_order(objective) if not x.parents and x not in chosen]
        objective.backward()
        for x, grad in others:
            x._grad = grad
        analytic = [x.grad if x.grad is not None else np.zeros_like(x.data) for x in targets]
        for x, name, grad in zip(targets, names, analytic):
            with no_grad():
                numeric = finite_differences(lambda: _scalar_objective(fn, inputs, projection).item(), x.data, eps)
            check_close(grad, numeric, f"gradcheck: gradient mismatch for {name} {tuple(x.shape)}",
                        "analytical", "numerical", atol, rtol, eps)
    finally:
        for x, (data, grad) in zip(targets, saved):
            x.data, x._grad = data, grad
    return True
