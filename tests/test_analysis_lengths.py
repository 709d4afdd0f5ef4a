"""The analysis of a padded batch (nn.RNN lengths=): past its length a sequence's state is held (s_j = s_{j−1}),
so its state Jacobians are those of the sequence run alone, ∂s_j/∂s_{j−1} = I on padded steps, and a padded
step has no explicit part to show (refused, naming the step and the length)."""
import numpy as np
import pytest

from tinygrad_rnn import analysis, nn

LENGTHS = [5, 2, 4]
CELLS = ["rnn", "gru", "lstm"]


def _padded(cell, T=6):
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(T, len(LENGTHS), 3))
    targets = rng.integers(0, 4, size=(T, len(LENGTHS)))
    for b, length in enumerate(LENGTHS):
        xs[length:, b] = 0.0
        targets[length:, b] = -1
    model = nn.RNN(3, 5, 4, cell=cell, seed=1, dtype=np.float64)
    _, out = model.loss(xs, targets, lengths=LENGTHS)
    return model, xs, targets, out


@pytest.mark.parametrize("cell", CELLS)
def test_state_jacobians_of_a_padded_sequence_are_those_of_the_sequence_alone(cell):
    model, xs, targets, out = _padded(cell)
    T = max(LENGTHS)  # only steps 1 … max(lengths) are recorded
    for b, length in enumerate(LENGTHS):
        _, alone = model.loss(xs[:length, b:b + 1], targets[:length, b:b + 1])
        for k in range(0, length + 1):
            expected = analysis.state_jacobian(alone, length, k)
            for t in range(length, T + 1):  # held after its length: ∂s_t/∂s_k = ∂s_length/∂s_k
                np.testing.assert_allclose(analysis.state_jacobian(out, t, k, batch=b), expected,
                                           rtol=1e-12, atol=1e-14, err_msg=f"{cell} b={b} t={t} k={k}")
        D = analysis.step_jacobians(out, batch=b)
        w = D.shape[-1]
        np.testing.assert_array_equal(D[length:], np.broadcast_to(np.eye(w), D[length:].shape))
        np.testing.assert_allclose(D[:length], analysis.step_jacobians(alone), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_flow_of_a_padded_sequence_measures_its_real_steps(cell):
    model, xs, targets, out = _padded(cell)
    b, length = 0, LENGTHS[0]
    _, alone = model.loss(xs[:length, b:b + 1], targets[:length, b:b + 1])
    flow = analysis.gradient_flow(out, batch=b, ends=[length])
    np.testing.assert_allclose(flow.jacobian_norms, analysis.gradient_flow(alone, ends=[length]).jacobian_norms,
                               rtol=1e-10)


def test_a_padded_step_has_no_explicit_part():
    _, _, _, out = _padded("rnn")
    analysis.explicit_grad(out, LENGTHS[1], batch=1)  # the last real step is fine
    with pytest.raises(ValueError, match=r"explicit_grad: step 3 is padding of sequence 1 \(length 2\)"):
        analysis.explicit_grad(out, LENGTHS[1] + 1, batch=1)
