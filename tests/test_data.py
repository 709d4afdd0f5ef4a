"""Data: the Zen-of-Python corpus, (T, B) windows, and the long-range task generators."""
import codecs

import numpy as np
import pytest

from tinygrad_rnn.data import (CharVocab, adding_problem, copy_task, load_text, unigram_entropy, windows,
                               zen_of_python)


def test_zen_of_python_is_this_s_decoded():
    import this
    zen = zen_of_python()
    assert zen == codecs.decode(this.s, "rot13")
    assert zen.startswith("The Zen of Python, by Tim Peters") and "Beautiful is better than ugly." in zen
    assert load_text() == zen


def test_load_text_reads_utf8(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("héllo wörld", encoding="utf-8")
    assert load_text(path) == "héllo wörld"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 2"):
        load_text(path)


def test_char_vocab_api_unchanged():
    v = CharVocab("helo")
    assert v.tokens == ["h", "e", "l", "o"]
    np.testing.assert_array_equal(v.encode("hell"), [0, 1, 2, 2])
    assert v.decode([3, 2]) == "ol"
    assert v.one_hot("he").shape == (2, 4)
    assert CharVocab.from_text("banana").tokens == ["a", "b", "n"]


def test_windows_shift_targets_and_cover_the_text():
    ids = np.arange(100)
    batches = list(windows(ids, seq_len=9, batch_size=3, rng=0))
    assert len(batches) == 3  # 9 or 10 windows of 10 ids at a random phase → 3 full batches
    seen = []
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (9, 3) and inputs.dtype == np.int64
        np.testing.assert_array_equal(targets, inputs + 1)   # the next character
        np.testing.assert_array_equal(np.diff(inputs, axis=0), 1)  # contiguous windows
        seen.extend(inputs[0])
    assert len(set(seen)) == len(seen)  # non-overlapping starts
    # fewer windows than the batch: one batch of random starts
    (inputs, targets), = list(windows(np.arange(30), seq_len=10, batch_size=8, rng=1))
    assert inputs.shape == (10, 8) and targets.max() <= 29
    with pytest.raises(ValueError, match="fewer than seq_len"):
        list(windows(np.arange(5), 10, 2))


def test_unigram_entropy():
    assert unigram_entropy([0, 1, 0, 1]) == pytest.approx(np.log(2))
    assert unigram_entropy([3, 3, 3]) == pytest.approx(0.0)


def test_adding_problem_targets_are_the_marked_sums():
    xs, targets = adding_problem(T=20, batch_size=50, rng=0)
    assert xs.shape == (20, 50, 2) and targets.shape == (50,) and xs.dtype == np.float32
    marks = xs[:, :, 1]
    np.testing.assert_array_equal(marks.sum(axis=0), 2)
    assert np.all(marks[:10].sum(axis=0) == 1) and np.all(marks[10:].sum(axis=0) == 1)  # one per half
    np.testing.assert_allclose((xs[:, :, 0] * marks).sum(axis=0), targets, rtol=1e-6)
    # the memoryless baseline: predicting 1 gives MSE ≈ Var(u1 + u2) = 1/6
    _, many = adding_problem(T=10, batch_size=20000, rng=1)
    assert np.mean((many - 1) ** 2) == pytest.approx(1 / 6, rel=0.05)


def test_copy_task_layout():
    inputs, targets = copy_task(T=5, batch_size=4, n_symbols=8, length=3, rng=0)
    assert inputs.shape == targets.shape == (11, 4)
    np.testing.assert_array_equal(targets[-3:], inputs[:3])       # recall the symbols at the end
    assert np.all((inputs[:3] >= 1) & (inputs[:3] <= 8))
    np.testing.assert_array_equal(inputs[3 + 5 - 1], 9)            # the go marker after T − 1 blanks
    assert np.all(targets[:-3] == 0) and np.all(np.delete(inputs, [0, 1, 2, 7], axis=0) == 0)
