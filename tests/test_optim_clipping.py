"""clip_grad_norm against torch.nn.utils.clip_grad_norm_ on the same gradients: the scale, the returned
norm, NaN/Inf gradients (scaled as torch does, or refused with error_if_nonfinite=True), and max norms that
would silently disable clipping (nan, inf, negative) refused (issue 16 #7)."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter
from tinygrad_rnn.optim import clip_grad_norm

GRADS = {"finite": [[3.0, 0.0, -1.0], [4.0, 2.0]], "barely over": [[0.6], [0.8]],
         "under": [[0.1, 0.2, 0.0], [0.05, 0.0]], "nan": [[np.nan, 1.0, 2.0], [1.0, 1.0]],
         "inf": [[np.inf, 1.0, 2.0], [-1.0, 0.0]]}


def _ours_and_torch(torch, grads):
    ours = [Parameter(np.zeros(len(g))) for g in grads]
    theirs = [torch.zeros(len(g), dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad, tp.grad = np.array(g), torch.tensor(g, dtype=torch.float64)
    return ours, theirs


@pytest.mark.parametrize("case", list(GRADS))
def test_clipping_matches_torch(case):
    torch = pytest.importorskip("torch")
    ours, theirs = _ours_and_torch(torch, GRADS[case])
    with np.errstate(invalid="ignore"):
        norm = clip_grad_norm(ours, 1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_allclose(norm, torch_norm.item(), rtol=1e-12)
    for p, tp in zip(ours, theirs):  # NaN where torch has NaN, the same values elsewhere
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", ["nan", "inf"])
def test_error_if_nonfinite_refuses_and_changes_nothing(case):
    torch = pytest.importorskip("torch")
    ours, theirs = _ours_and_torch(torch, GRADS[case])
    with pytest.raises(RuntimeError, match=r"non-finite"):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match=f"total L2 norm of the gradients is {case}.*error_if_nonfinite"):
        clip_grad_norm(ours, 1.0, error_if_nonfinite=True)
    for p, g in zip(ours, GRADS[case]):
        np.testing.assert_array_equal(p.grad, g)
    finite, _ = _ours_and_torch(torch, GRADS["finite"])  # a finite norm clips as usual with the flag on
    assert clip_grad_norm(finite, 1.0, error_if_nonfinite=True) == pytest.approx(np.sqrt(30.0))


@pytest.mark.parametrize("max_norm", [np.nan, np.inf, -np.inf, -1.0, "1.0", None, True])
def test_max_norms_that_would_disable_clipping_are_refused(max_norm):
    p = Parameter(np.zeros(2))
    p.grad = np.array([30.0, 40.0])
    with pytest.raises(ValueError, match=r"clip_grad_norm: max_norm must be a finite number >= 0, got"):
        clip_grad_norm([p], max_norm)
    np.testing.assert_array_equal(p.grad, [30.0, 40.0])


def test_zero_and_numpy_max_norms_are_accepted():
    p = Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    assert clip_grad_norm([p], np.float32(2.5)) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad, [1.5, 2.0], rtol=1e-6)
    clip_grad_norm([p], 0)
    np.testing.assert_array_equal(p.grad, [0.0, 0.0])
