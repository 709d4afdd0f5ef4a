"""The four architectures: each trains on a tiny problem (loss drops), records one Unroll with per-step
copies, and the one-to-many sampler obeys its temperature."""
import numpy as np
import pytest

from tinygrad_rnn import nn, no_grad
from tinygrad_rnn.nn.architectures import generate, unroll
from tinygrad_rnn.optim import Adam


def _fit(loss_fn, params, steps, lr=0.05):
    opt = Adam(params, lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss_fn().item()


def test_unroll_helper_records_steps_and_copies():
    cell = nn.LSTMCell(2, 3, seed=0)
    hiddens, (h, c), tape = unroll(cell, np.ones((4, 2)), start=5)
    assert tape.steps == [5, 6, 7, 8] and [x.name for x in hiddens] == ["s(5)", "s(6)", "s(7)", "s(8)"]
    assert h is hiddens[-1]
    assert len(tape.copies(cell.weight_hh)) == 4


def test_many_to_many_tagger_learns_a_delayed_echo():
    rng = np.random.default_rng(0)
    model = nn.SequenceTagger(4, 4, 16, 4, cell="gru", seed=0)

    def loss_fn():
        ids = rng.integers(0, 4, size=(6, 16))
        tags = np.concatenate([np.zeros((1, 16), dtype=np.int64), ids[:-1]])  # the previous token
        return model.loss(ids, tags)[0]
    first, last = _fit(loss_fn, model.parameters(), 60)
    assert last < 0.5 * first
    logits, tape = model.forward(np.zeros((3, 2), dtype=np.int64))
    assert len(logits) == 3 and tape.steps == [1, 2, 3]
    assert len(tape.copies(model.head.weight)) == 3 and len(tape.copies(model.embed.weight)) == 3


def test_many_to_one_classifier_loss_on_the_last_step_only():
    model = nn.SequenceClassifier(1, 8, 2, cell="rnn", seed=0)
    xs = np.random.default_rng(0).standard_normal((5, 32, 1)).astype(np.float32)
    labels = (xs[0, :, 0] > 0).astype(np.int64)  # the first input decides the class
    first, last = _fit(lambda: model.loss(xs, labels)[0], model.parameters(), 80)
    assert last < 0.5 * first
    y, tape = model.forward(xs)
    assert y.shape == (32, 2) and y.name == "y(5)"
    assert [c.step for c in tape.copies(model.head.weight)] == [5]  # the head runs at the last step only
    loss, y = model.loss(xs[:, :4], np.ones((4, 2)), kind="regression")
    np.testing.assert_allclose(loss.item(), np.mean((y.data - 1) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"regression targets \(4,\) do not fit the predictions \(4, 2\)"):
        model.loss(xs[:, :4], np.ones(4), kind="regression")
    with pytest.raises(ValueError, match="kind must be"):
        model.loss(xs, labels, kind="ranking")


def test_seq2seq_steps_continue_from_encoder_to_decoder():
    model = nn.Seq2Seq(5, 4, 12, bos=4, cell="gru", seed=0)
    rng = np.random.default_rng(0)

    def loss_fn():
        src = rng.integers(0, 4, size=(3, 16))
        return model.loss(src, src[::-1])[0]
    first, last = _fit(loss_fn, model.parameters(), 60)
    assert last < first
    src = np.array([[0], [1], [2]])
    loss, logits, tape = model.loss(src, src[::-1])
    assert tape.steps == [1, 2, 3, 4, 5, 6]
    assert [c.step for c in tape.copies(model.encoder.cell.weight_hh)] == [1, 2, 3]
    assert [c.step for c in tape.copies(model.cell.weight_hh)] == [4, 5, 6]
    assert model.translate(src, 3).shape == (3, 1)


def test_generate_temperature():
    model = nn.RNN(3, 4, 3, seed=0)
    model.c.data = np.array([0.0, 3.0, 0.0], dtype=np.float32)
    model.V.data[:] = 0  # next-token distribution = softmax(c), whatever the input
    greedy = generate(model, [0], 20, temperature=0)
    np.testing.assert_array_equal(greedy, 1)
    hot = generate(model, [0], 3000, temperature=1.0, rng=0)
    p = np.exp([0, 3, 0]) / np.exp([0, 3, 0]).sum()
    np.testing.assert_allclose(np.bincount(hot, minlength=3) / 3000, p, atol=0.03)
    flat = generate(model, [0], 3000, temperature=100.0, rng=0)
    np.testing.assert_allclose(np.bincount(flat, minlength=3) / 3000, 1 / 3, atol=0.04)
    with no_grad():
        assert generate(model, [0, 1], 0).shape == (0,)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [0], 1, temperature=-1)


def test_sequence_classifier_rejects_an_empty_sequence():
    model = nn.SequenceClassifier(1, 4, 2, cell="rnn", seed=0)
    with pytest.raises(ValueError, match="empty"):
        model.forward(np.zeros((0, 3, 1)))
