"""SequenceClassifier's regression loss refuses targets of the right size but the wrong shape (issue 16 #5):
reshaping (2, 3) targets onto (3, 2) predictions pairs them wrongly; torch's mse_loss raises there too."""
import numpy as np
import pytest

from tinygrad_rnn import nn
from tinygrad_rnn.errors import ShapeError


def _model_and_inputs(outputs, batch=3):
    model = nn.SequenceClassifier(2, 4, outputs, cell="rnn", seed=0, dtype=np.float64)
    return model, np.random.default_rng(1).standard_normal((5, batch, 2))


def test_right_size_wrong_shape_is_a_shape_error_as_in_torch():
    torch = pytest.importorskip("torch")
    model, xs = _model_and_inputs(2)
    targets = np.arange(6.0).reshape(2, 3)             # 6 values, but predictions are (3, 2)
    with pytest.raises(ShapeError, match=r"regression targets \(2, 3\) do not fit the predictions \(3, 2\)"):
        model.loss(xs, targets, kind="regression")
    y, _ = model.forward(xs)
    with pytest.raises(RuntimeError), pytest.warns(UserWarning):  # torch refuses the same pair
        torch.nn.functional.mse_loss(torch.tensor(y.data), torch.tensor(targets))


def test_matching_targets_give_torchs_mse():
    torch = pytest.importorskip("torch")
    model, xs = _model_and_inputs(2)
    targets = np.arange(6.0).reshape(3, 2)
    loss, y = model.loss(xs, targets, kind="regression")
    expected = torch.nn.functional.mse_loss(torch.tensor(y.data), torch.tensor(targets)).item()
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_one_output_takes_targets_of_shape_batch():
    torch = pytest.importorskip("torch")
    model, xs = _model_and_inputs(1)
    targets = np.array([0.5, -1.0, 2.0])
    loss, y = model.loss(xs, targets, kind="regression")      # (3,) targets for (3, 1) predictions: documented
    expected = torch.nn.functional.mse_loss(torch.tensor(y.data[:, 0]), torch.tensor(targets)).item()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ShapeError, match=r"\(1, 3\) do not fit the predictions \(3, 1\) \(expected \(3, 1\) or "
                                         r"\(3,\)\)"):
        model.loss(xs, targets.reshape(1, 3), kind="regression")
