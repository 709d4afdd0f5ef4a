"""Shared test helpers: an independent finite-difference checker (not the engine's gradcheck) and engine
gradients of a function of plain arrays, both in float64.

The helpers are fixtures (`numerical_grad`, `engine_grads`) so test files need no import path tricks.
"""
import os

import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, no_grad

try:  # hypothesis profiles (tests/test_properties.py): "ci" (default) is bounded, quick and deterministic;
    # HYPOTHESIS_PROFILE=thorough explores many more random graphs
    from hypothesis import HealthCheck, settings

    _quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=_quiet,
                              print_blob=True)
    settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; only test_properties.py needs it
    pass


def _projection(shape, seed=1234):
    """A fixed random weighting: checking Σ w·f(x) checks the whole Jacobian's action, not just a sum."""
    return np.random.default_rng(seed).standard_normal(shape)


def scalar_value(out, weights):
    data = out.data if isinstance(out, Tensor) else np.asarray(out)
    return float(np.sum(np.asarray(data, dtype=np.float64) * weights))


def finite_differences(fn, arrays, eps=1e-6):
    """Central differences of Σ w·fn(*arrays) w.r.t. every element of every array (float64, in place).

    fn takes Tensors (float64 constants) and returns a Tensor; w is a fixed random projection of the
    output's shape. Returns one gradient array per input array.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    with no_grad():
        out = fn(*[Tensor(a) for a in arrays])
    weights = _projection(np.shape(out.data))
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            with no_grad():
                plus = scalar_value(fn(*[Tensor(b) for b in arrays]), weights)
            flat[j] = orig - eps
            with no_grad():
                minus = scalar_value(fn(*[Tensor(b) for b in arrays]), weights)
            flat[j] = orig
            gflat[j] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def backward_grads(fn, arrays):
    """The engine's gradients of Σ w·fn(*params) (same projection as finite_differences), float64."""
    params = [Parameter(np.array(a, dtype=np.float64)) for a in arrays]
    out = fn(*params)
    weights = _projection(out.shape)
    (out * Tensor(weights)).sum().backward()
    return [p.grad if p.grad is not None else np.zeros_like(p.data) for p in params]


@pytest.fixture
def numerical_grad():
    return finite_differences


@pytest.fixture
def engine_grads():
    return backward_grads


@pytest.fixture
def rng():
    return np.random.default_rng(0)
