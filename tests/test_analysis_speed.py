"""The fast paths of the long-T analysis give the exact path's numbers: the unit-structured local
Jacobians (one backward per state block) against the w unit-seeded passes, the warm-started Lanczos
spectral norms against dense SVDs, and products far below 1e-154 (where JᵀJ underflows) kept exact."""
import numpy as np
import pytest

from tinygrad_rnn import nn
from tinygrad_rnn.analysis import gradient_flow, step_jacobians
from tinygrad_rnn.analysis import flow as flow_module
from tinygrad_rnn.analysis.local import local_jacobians
from tinygrad_rnn.analysis.recording import recording

CELLS = ("rnn", "gru", "lstm")


def _output(cell, T, d, B=None, seed=0, n=5):
    rng = np.random.default_rng(seed)
    model = nn.RNN(n, d, n, cell=cell, seed=seed, dtype=np.float64)
    shape = (T, n) if B is None else (T, B, n)
    targets = rng.integers(0, n, (T,) if B is None else (T, B))
    return model, model.loss(rng.standard_normal(shape), targets)[1]


@pytest.mark.parametrize("cell", CELLS)
def test_unit_path_equals_the_unit_seeded_passes(cell):
    _, out = _output(cell, T=7, d=4, B=3)
    rec = recording(out)
    params = [P for name, P in rec.model.named_parameters() if name not in ("V", "c")]
    fast = local_jacobians(rec, np.arange(1, 8), params)
    exact = local_jacobians(rec, np.arange(1, 8), params, exact=True)
    assert fast.sites[params[0]][0].blocks is not None and exact.sites[params[0]][0].blocks is None
    np.testing.assert_allclose(fast.D, exact.D, rtol=0, atol=1e-14)
    live = np.random.default_rng(1).standard_normal((3, 5, rec.width))
    for P in params:
        assert len(fast.sites[P]) == len(exact.sites[P]) >= 1
        for quick, slow in zip(fast.sites[P], exact.sites[P]):
            for i in range(7):
                np.testing.assert_allclose(quick.matrix(i), slow.matrix(i), rtol=0, atol=1e-14)
                np.testing.assert_allclose(quick.left(live, i), np.matmul(live, slow.matrix(i)), atol=1e-13)
                if slow.u is not None:
                    np.testing.assert_array_equal(quick.u[i], slow.u[i])


def _row_by_hand(D, T):
    """‖∂s_T/∂s_k‖₂ for k = T … 0 by dense products and SVDs, rescaled so nothing underflows:
    (mantissa norms, natural-log scales)."""
    J, scale, norms, scales = np.eye(D.shape[-1]), 0.0, [1.0], [0.0]
    for k in range(T, 0, -1):
        J = J @ D[k - 1]
        size = np.abs(J).max()
        J, scale = J / size, scale + np.log(size)
        norms.append(np.linalg.norm(J, 2))
        scales.append(scale)
    return np.array(norms), np.array(scales)


@pytest.mark.parametrize("cell, d", [("rnn", 70), ("gru", 66), ("lstm", 36)])
def test_lanczos_norms_of_wide_jacobians_equal_the_svd(cell, d):
    _, out = _output(cell, T=90, d=d, seed=2)
    assert recording(out).width > flow_module.EXACT_WIDTH  # the warm-started Lanczos path
    flow = gradient_flow(out, ends=[90])
    norms, scales = _row_by_hand(step_jacobians(out), 90)
    np.testing.assert_allclose(flow.norms[90, ::-1], norms * np.exp(scales), rtol=1e-10)
    assert np.all(flow.norms[90, :90] > 0)


def test_norms_far_below_the_square_root_of_the_smallest_float_are_kept():
    # a sigmoid RNN with a small W vanishes at ≈ γλ = 0.1 per step: by gap 200 the norm is ≈ 1e-200, whose
    # square (JᵀJ) is below the smallest float; the rescaled product keeps every digit
    model = nn.RNN(3, 4, 3, nonlinearity="sigmoid", seed=0, dtype=np.float64)
    model.W.data = 0.4 * np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]
    rng = np.random.default_rng(1)
    _, out = model.loss(np.eye(3)[rng.integers(0, 3, 300)], rng.integers(0, 3, 300))
    flow = gradient_flow(out)
    norms, scales = _row_by_hand(step_jacobians(out), 300)
    expected = norms * np.exp(scales)
    assert expected[250] < 1e-200 and np.isfinite(np.log(expected)).all()
    np.testing.assert_allclose(flow.norms[300, ::-1], expected, rtol=1e-9)
    assert flow.rate == pytest.approx(np.exp(np.polyfit(np.arange(1, 300), np.log(expected[1:300]), 1)[0]),
                                      rel=1e-9)
