"""Variable-length batches (lengths=): a padded batch gives every sequence the loss and gradients it gets
alone and as torch's pack_padded_sequence gives them; padded steps contribute nothing; the tape holds one
copy per real step."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, gradcheck, nn
from tinygrad_rnn.nn.architectures import unroll

LENGTHS = [5, 2, 4, 1]
CELLS = ["rnn", "gru", "lstm"]


def _batch(seed=0, n=3, k=4, T=6, lengths=LENGTHS, fill=0.0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, len(lengths), n))
    targets = rng.integers(0, k, size=(T, len(lengths)))
    for b, length in enumerate(lengths):
        xs[length:, b] = fill  # padding: whatever the caller put there must not matter
        targets[length:, b] = -1  # not even an invalid class
    return xs, targets


def _grads(model):
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def _alone(model, xs, targets, lengths, loss="cross_entropy"):
    """Σ over sequences of (loss, grads) with each sequence run alone, unpadded."""
    total, grads = 0.0, None
    for b, length in enumerate(lengths):
        model.zero_grad()
        L, _ = model.loss(xs[:length, b:b + 1], targets[:length, b:b + 1], loss=loss)
        L.backward()
        total += L.item()
        g = _grads(model)
        grads = g if grads is None else {k: grads[k] + g[k] for k in g}
    return total, grads


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_each_sequence_alone(cell):
    model = nn.RNN(3, 5, 4, cell=cell, seed=1, dtype=np.float64)
    xs, targets = _batch()
    L, out = model.loss(xs, targets, lengths=LENGTHS)
    model.zero_grad()
    L.backward()
    batched = _grads(model)
    total, alone = _alone(model, xs, targets, LENGTHS)
    assert L.item() == pytest.approx(total, rel=1e-12)
    for name in batched:
        np.testing.assert_allclose(batched[name], alone[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # every sequence's logits at its real steps and its final state are its own
    for b, length in enumerate(LENGTHS):
        single = model.forward(xs[:length, b:b + 1])
        for t in range(length):
            np.testing.assert_allclose(out.logits[t].data[b], single.logits[t].data[0], rtol=1e-12)
        np.testing.assert_allclose(out.states[-1].data[b], single.states[-1].data[0], rtol=1e-12)


@pytest.mark.parametrize("fill", [1e30, np.nan])
def test_padding_values_contribute_nothing(fill):
    model = nn.RNN(3, 5, 4, cell="lstm", seed=2, dtype=np.float64)
    results = []
    for value in (0.0, fill):
        xs, targets = _batch(fill=value)
        model.zero_grad()
        L, _ = model.loss(xs, targets, lengths=LENGTHS)
        L.backward()
        results.append((L.item(), _grads(model)))
    assert np.isfinite(results[1][0]) and results[0][0] == results[1][0]
    for name, g in results[0][1].items():
        np.testing.assert_array_equal(g, results[1][1][name])


@pytest.mark.parametrize("cell", CELLS)
def test_one_copy_per_real_step_and_step_grads_add_up(cell):
    """A batch has max(lengths) copies; copy t carries exactly the gradient of the sequences alive at t."""
    model = nn.RNN(3, 5, 4, cell=cell, seed=3, dtype=np.float64)
    W = model.W if cell == "rnn" else model.cell.weight_hh
    xs, targets = _batch(T=8)  # two columns of pure padding: never recorded
    L, out = model.loss(xs, targets, lengths=LENGTHS)
    L.backward()
    assert out.tape.steps == [1, 2, 3, 4, 5] and out.T == 5
    assert [c.name for c in out.tape.copies(W)] == [f"{W.name}({t})" for t in range(1, 6)]
    assert {node.step for node in out.losses} == {1, 2, 3, 4, 5}
    batch_steps = out.tape.step_grads(W)
    expected = np.zeros_like(batch_steps)
    for b, length in enumerate(LENGTHS):
        model.zero_grad()
        L1, alone = model.loss(xs[:length, b:b + 1], targets[:length, b:b + 1])
        L1.backward()
        assert len(alone.tape.copies(W)) == length
        expected[:length] += alone.tape.step_grads(W)
    np.testing.assert_allclose(batch_steps, expected, rtol=1e-10, atol=1e-12)


def _torch_packed(model, xs, targets, lengths):
    """torch: pack_padded_sequence → the same cell → pad_packed_sequence → Linear, CE summed over real steps."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    twin = model.to_torch()
    packed = pack_padded_sequence(torch.from_numpy(xs), torch.tensor(lengths), enforce_sorted=False)
    hs, _ = pad_packed_sequence(twin.rnn(packed)[0], total_length=xs.shape[0])
    logits = twin.out(hs)
    tgt = torch.from_numpy(np.where(targets < 0, -100, targets))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                             reduction="sum", ignore_index=-100)
    loss.backward()
    return loss.item(), twin


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_matches_torch_pack_padded_sequence(cell):
    pytest.importorskip("torch")
    model = nn.RNN(3, 5, 4, cell=cell, seed=4, dtype=np.float64)
    xs, targets = _batch(seed=5)
    L, _ = model.loss(xs, targets, lengths=LENGTHS)
    L.backward()
    torch_loss, twin = _torch_packed(model, xs, targets, LENGTHS)
    assert L.item() == pytest.approx(torch_loss, rel=1e-12)
    grad = lambda p: p.grad.numpy()  # noqa: E731
    np.testing.assert_allclose(model.V.grad, grad(twin.out.weight).T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.c.grad, grad(twin.out.bias), rtol=1e-10, atol=1e-12)
    if cell == "rnn":
        pairs = [(model.U, twin.rnn.weight_ih_l0, True), (model.W, twin.rnn.weight_hh_l0, True),
                 (model.b, twin.rnn.bias_ih_l0, False)]
    else:
        pairs = [(getattr(model.cell, n), getattr(twin.rnn, n + "_l0"), n.startswith("weight"))
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    for ours, theirs, transposed in pairs:
        np.testing.assert_allclose(ours.grad, grad(theirs).T if transposed else grad(theirs), rtol=1e-9,
                                   atol=1e-12, err_msg=ours.name)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_gradients_match_finite_differences(cell):
    model = nn.RNN(2, 3, 3, cell=cell, seed=6, dtype=np.float64)
    xs, targets = _batch(seed=7, n=2, k=3, T=4, lengths=[4, 1, 3])
    params = [p for _, p in model.named_parameters()]
    assert gradcheck(lambda *_: model.loss(xs, targets, lengths=[4, 1, 3])[0], params)


def test_forward_with_lengths_keeps_each_final_state():
    model = nn.RNN(3, 4, 2, cell="gru", seed=8, dtype=np.float64)
    xs, _ = _batch()
    out = model.forward(xs, lengths=LENGTHS)
    assert out.targets is None and out.losses == [] and len(out.logits) == max(LENGTHS)
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(out.states[-1].data[b], model.forward(xs[:length, b]).states[-1].data)


def test_fixed_length_path_unchanged_by_lengths_of_full_length():
    """lengths all equal to T is the fixed-length batch (same loss, gradients), whichever path records it."""
    model = nn.RNN(3, 5, 4, seed=9, dtype=np.float64)
    xs, targets = _batch(lengths=[6, 6, 6])
    L1, out1 = model.loss(xs, targets)
    L1.backward()
    g1 = _grads(model)
    model.zero_grad()
    L2, out2 = model.loss(xs, targets, lengths=[6, 6, 6])
    L2.backward()
    assert L1.item() == pytest.approx(L2.item(), rel=1e-12)
    for name, g in _grads(model).items():
        np.testing.assert_allclose(g, g1[name], rtol=1e-10)
    assert out1.lengths is None and list(out2.lengths) == [6, 6, 6]


@pytest.mark.parametrize("bad, match", [([3, 2], r"4 integers"), ([0, 1, 2, 3], r"\[1, 6\]"),
                                        ([7, 1, 1, 1], r"\[1, 6\]"), ([1.5, 2, 3, 4], "integers")])
def test_bad_lengths_are_refused_clearly(bad, match):
    model = nn.RNN(3, 5, 4, seed=0)
    xs, targets = _batch()
    with pytest.raises(ValueError, match="RNN.forward: lengths.*" + match):
        model.loss(xs, targets, lengths=bad)


def test_lengths_need_a_batch_and_real_targets_must_be_classes():
    model = nn.RNN(3, 5, 4, seed=0)
    with pytest.raises(ValueError, match=r"lengths need a batch"):
        model.forward(np.zeros((4, 3)), lengths=[4])
    xs, targets = _batch()
    targets[0, 0] = 9
    with pytest.raises(ValueError, match=r"RNN.loss: targets must be in \[0, 4\)"):
        model.loss(xs, targets, lengths=LENGTHS)


# --- the cells' unroll and the architectures ----------------------------------------------------------

def test_unroll_keeps_each_sequence_final_state():
    cell = nn.LSTMCell(3, 4, seed=0, dtype=np.float64)
    xs, _ = _batch()
    hiddens, (h, c), tape = unroll(cell, xs, lengths=LENGTHS)
    assert tape.steps == [1, 2, 3, 4, 5] and len(tape.copies(cell.weight_hh)) == 5
    for b, length in enumerate(LENGTHS):
        _, (h1, c1), _ = unroll(cell, xs[:length, b])
        np.testing.assert_allclose(h.data[b], h1.data, rtol=1e-12)
        np.testing.assert_allclose(c.data[b], c1.data, rtol=1e-12)


def _ids(seed=0, T=6, lengths=LENGTHS, vocab=5):
    rng = np.random.default_rng(seed)
    ids, tags = rng.integers(0, vocab, size=(T, len(lengths))), rng.integers(0, 3, size=(T, len(lengths)))
    for b, length in enumerate(lengths):
        ids[length:, b], tags[length:, b] = 4, -7
    return ids, tags


@pytest.mark.parametrize("cell", CELLS)
def test_tagger_padded_batch_equals_sequences_alone(cell):
    model = nn.SequenceTagger(5, 3, 4, 3, cell=cell, seed=1, dtype=np.float64)
    ids, tags = _ids()
    L, _ = model.loss(ids, tags, lengths=LENGTHS)
    model.zero_grad()
    L.backward()
    batched = _grads(model)
    total, grads = 0.0, {k: 0 for k in batched}
    for b, length in enumerate(LENGTHS):
        model.zero_grad()
        L1, _ = model.loss(ids[:length, b:b + 1], tags[:length, b:b + 1])
        L1.backward()
        total += L1.item() * length
        grads = {k: grads[k] + g * length for k, g in _grads(model).items()}
    count = sum(LENGTHS)
    assert L.item() == pytest.approx(total / count, rel=1e-12)
    for name, g in batched.items():
        np.testing.assert_allclose(g, grads[name] / count, rtol=1e-10, atol=1e-13, err_msg=name)
    predicted = model.predict(ids, lengths=LENGTHS)
    assert predicted.shape == (5, 4) and (predicted[4:, 2] == -100).all() and (predicted[:4, 2] >= 0).all()
    assert (predicted[:1, 3] >= 0).all() and (predicted[1:, 3] == -100).all()


@pytest.mark.parametrize("cell", CELLS)
def test_classifier_predicts_from_each_sequence_last_real_step(cell):
    model = nn.SequenceClassifier(3, 4, 2, cell=cell, seed=2, dtype=np.float64)
    xs, _ = _batch()
    labels = np.array([0, 1, 1, 0])
    L, y = model.loss(xs, labels, lengths=LENGTHS)
    model.zero_grad()
    L.backward()
    batched = _grads(model)
    grads = {k: 0 for k in batched}
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(y.data[b], model.forward(xs[:length, b:b + 1])[0].data[0], rtol=1e-12)
        model.zero_grad()
        L1, _ = model.loss(xs[:length, b:b + 1], labels[b:b + 1])
        L1.backward()
        grads = {k: grads[k] + g / len(LENGTHS) for k, g in _grads(model).items()}
    for name, g in batched.items():
        np.testing.assert_allclose(g, grads[name], rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_seq2seq_padded_sources_and_targets_equal_pairs_alone(cell):
    model = nn.Seq2Seq(5, 3, 4, bos=0, cell=cell, seed=3, dtype=np.float64)
    src, _ = _ids(seed=4, lengths=[3, 6, 1])
    tgt, _ = _ids(seed=5, T=4, lengths=[2, 4, 3], vocab=4)
    L, logits, tape = model.loss(src, tgt, src_lengths=[3, 6, 1], tgt_lengths=[2, 4, 3])
    assert tape.steps == list(range(1, 6 + 4 + 1))  # encoder steps 1..6, decoder 7..10
    model.zero_grad()
    L.backward()
    batched = _grads(model)
    total, grads = 0.0, {k: 0 for k in batched}
    for b, (s, t) in enumerate(zip([3, 6, 1], [2, 4, 3])):
        model.zero_grad()
        L1, _, _ = model.loss(src[:s, b:b + 1], tgt[:t, b:b + 1])
        L1.backward()
        total += L1.item() * t
        grads = {k: grads[k] + g * t for k, g in _grads(model).items()}
    assert L.item() == pytest.approx(total / 9, rel=1e-12)
    for name, g in batched.items():
        np.testing.assert_allclose(g, grads[name] / 9, rtol=1e-10, atol=1e-13, err_msg=name)
    greedy = model.translate(src, 3, src_lengths=[3, 6, 1])
    assert (greedy[:, 2] == model.translate(src[:1, 2:3], 3)[:, 0]).all()


def test_bce_with_lengths_ignores_padded_targets():
    model = nn.RNN(3, 4, 2, seed=5, dtype=np.float64)
    xs, _ = _batch()
    targets = np.random.default_rng(1).uniform(size=(6, 4, 2))
    targets[5:, 0] = 7.0  # out of [0, 1], but padded: ignored
    L, out = model.loss(xs, targets, lengths=LENGTHS, loss="bce")
    L.backward()
    grads = _grads(model)
    total = 0.0
    model.zero_grad()
    for b, length in enumerate(LENGTHS):
        L1, _ = model.loss(xs[:length, b:b + 1], targets[:length, b:b + 1], loss="bce")
        L1.backward()
        total += L1.item()
    assert L.item() == pytest.approx(total, rel=1e-12)
    for name, g in _grads(model).items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-13)


def test_parameter_gradients_identical_per_copy_sum():
    """Σ_t ∂L/∂W(t) = ∂L/∂W still holds in a padded batch (the copies' sum is the weight's gradient)."""
    model = nn.RNN(3, 5, 4, seed=10, dtype=np.float64)
    xs, targets = _batch()
    L, out = model.loss(xs, targets, lengths=LENGTHS)
    L.backward()
    for p in (model.U, model.W, model.b, model.V, model.c):
        assert isinstance(p, Parameter)
        np.testing.assert_allclose(out.tape.step_grads(p).sum(axis=0), p.grad, rtol=1e-10, atol=1e-13)


# --- the examples' variable-length modes ----------------------------------------------------------------

def _example(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tagging_example_variable_mode_learns(capsys):
    example = _example("many_to_many_tagging")
    ids, tags, lengths = example.batch(np.random.default_rng(0), variable=True)
    assert lengths.min() >= 3 and len(set(lengths)) > 1 and (ids[lengths[0]:, 0] == example.PAD).all()
    assert example.main(steps=60, variable=True) > 0.4  # chance ≈ 0.23
    assert "variable-length" in capsys.readouterr().out


def test_char_lm_example_lines_mode_trains_on_padded_lines(capsys):
    example = _example("one_to_many_generation")
    from tinygrad_rnn.data import CharVocab, zen_of_python
    zen = zen_of_python()
    vocab = CharVocab.from_text(zen)
    xs, targets, lengths = example.padded_lines(zen, vocab)
    lines = [line for line in zen.splitlines() if line.strip()]
    assert list(lengths) == [len(line) for line in lines] and xs.shape[:2] == (max(lengths), len(lines))
    assert vocab.decode(targets[:lengths[1], 1]) == lines[1][1:] + "\n"
    losses = example.main(updates=8, lines=True)
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert capsys.readouterr().out.count("temperature") == 3
