"""Module follows torch.nn.Module's conventions (issue 15): train()/eval() set `training` on every
sub-module and return self, children() are the direct sub-modules, apply() visits children first, and the
repr has torch's layout — each checked against torch on a module tree of the same shape."""
import pydoc

import numpy as np
import pytest

from tinygrad_rnn import Parameter, nn, optim


def _torch_classifier(torch):
    """torch's twin of nn.SequenceClassifier(2, 4, 1, cell="lstm"): the same tree and attribute names."""
    class SequenceClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(2, 4)
            self.head = torch.nn.Linear(4, 1)
    return SequenceClassifier()


def _torch_seq2seq(torch):
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.cell = torch.nn.Embedding(5, 3), torch.nn.GRUCell(3, 4)

    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.embed = Encoder(), torch.nn.Embedding(5, 3)
            self.cell, self.head = torch.nn.GRUCell(3, 4), torch.nn.Linear(4, 5)
    return Seq2Seq()


def _ours_seq2seq():
    return nn.Seq2Seq(5, 3, 4, bos=0, cell="gru", seed=0)


def test_train_and_eval_set_every_submodule_and_return_self_as_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in [(_ours_seq2seq(), _torch_seq2seq(torch)),
                         (nn.SequenceClassifier(2, 4, 1, seed=0), _torch_classifier(torch))]:
        assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
        assert all(m.training for m in ours.modules())
        assert ours.eval() is ours and theirs.eval() is theirs
        assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()] == \
            [False] * len(list(theirs.modules()))
        assert ours.train() is ours and all(m.training for m in ours.modules())
        assert ours.train(False) is ours and not any(m.training for m in ours.modules())  # == eval()
        ours.train(True), theirs.train(True)
        ours.encoder.eval() if hasattr(ours, "encoder") else ours.head.eval()  # a sub-tree only
        theirs.encoder.eval() if hasattr(theirs, "encoder") else theirs.head.eval()
        assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        theirs.train("no")
    with pytest.raises(ValueError, match=r"SequenceClassifier.train: training mode is expected to be boolean, "
                                         r"got 'no'"):
        ours.train("no")


def test_children_modules_and_named_modules_match_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _ours_seq2seq(), _torch_seq2seq(torch)
    assert [type(m).__name__ for m in ours.children()] == ["Encoder", "Embedding", "GRUCell", "Linear"]
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in theirs.children()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()] == \
        ["", "encoder", "encoder.embed", "encoder.cell", "embed", "cell", "head"]
    assert list(ours.modules())[2] is ours.encoder.embed
    rnn = nn.RNN(3, 4, 5, seed=0)   # the vanilla cell shares U, W, b with the model: parameters once each
    assert [n for n, _ in rnn.named_parameters()] == ["U", "W", "b", "V", "c"]
    assert [n for n, _ in rnn.named_children()] == ["cell"] and rnn.cell.W is rnn.W


def test_apply_visits_children_first_and_returns_self_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _ours_seq2seq(), _torch_seq2seq(torch)
    seen_ours, seen_theirs = [], []
    assert ours.apply(lambda m: seen_ours.append(type(m).__name__)) is ours
    assert theirs.apply(lambda m: seen_theirs.append(type(m).__name__)) is theirs
    assert seen_ours == seen_theirs == ["Embedding", "GRUCell", "Encoder", "Embedding", "GRUCell", "Linear",
                                        "Seq2Seq"]

    def zero_linear_bias(m):  # the usual use: initialise every layer of one kind
        if isinstance(m, nn.Linear):
            m.bias.data = np.zeros_like(m.bias.data)
    ours.apply(zero_linear_bias)
    np.testing.assert_array_equal(ours.head.bias.data, 0)


def test_apply_visits_a_shared_module_once_and_deep_trees_without_recursion():
    class Chain(nn.Module):
        def __init__(self, inner=None):
            self.w = Parameter(np.ones(1))
            if inner is not None:
                self.inner = inner
    root = None
    for _ in range(5000):  # deeper than Python's recursion limit
        root = Chain(root)
    assert len(list(root.modules())) == 5000 and len(root.parameters()) == 5000
    count = []
    root.apply(lambda m: count.append(1))
    assert len(count) == 5000 and root.eval() is root and not root.inner.inner.training
    shared = nn.Linear(2, 2, seed=0)

    class Twice(nn.Module):
        def __init__(self):
            self.a, self.b = shared, shared
    visits = []
    Twice().apply(visits.append)
    assert [type(m).__name__ for m in visits] == ["Linear", "Twice"]


def test_repr_has_torchs_layout():
    torch = pytest.importorskip("torch")
    ours = nn.SequenceClassifier(2, 4, 1, cell="lstm", seed=0)
    assert repr(ours) == repr(_torch_classifier(torch)) == (
        "SequenceClassifier(\n  (cell): LSTMCell(2, 4)\n"
        "  (head): Linear(in_features=4, out_features=1, bias=True)\n)")
    nested = repr(_ours_seq2seq())
    assert nested.splitlines()[:4] == ["Seq2Seq(", "  (encoder): Encoder(", "    (embed): Embedding(5, 3)",
                                       "    (cell): GRUCell(3, 4)"]

    class Affine(nn.Module):
        def __init__(self):
            self.w, self.b = Parameter(np.ones((2, 3), np.float32)), Parameter(np.zeros(3, np.float32))
    assert repr(Affine()) == "Affine(w: (2, 3), b: (3,); float32)"


def test_help_prints_something_useful():
    module_help = pydoc.render_doc(nn.Module, renderer=pydoc.plaintext)
    for text in ("torch.nn.Module", "training", "train(self, mode=True)", "eval(self)", "children(self)",
                 "apply(self, fn)", "children first", "state_dict", "save(self, path, metadata=None, "
                 "optimizer=None, scheduler=None)"):
        assert text in module_help, text
    adam_help = pydoc.render_doc(optim.Adam, renderer=pydoc.plaintext)
    for text in ("torch.optim.Adam", "betas=(0.9, 0.999)", "param_groups", "state_dict", "exp_avg_sq"):
        assert text in adam_help, text
    assert "gamma every step_size" in pydoc.render_doc(optim.StepLR, renderer=pydoc.plaintext)


def test_the_docstring_example_runs():
    import doctest
    from tinygrad_rnn.nn import module
    assert doctest.testmod(module).failed == 0 and doctest.testmod(module).attempted >= 1
