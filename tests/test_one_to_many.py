"""nn.OneToMany: a fixed input at step 1 generating a sequence, trained with teacher forcing — its
gradients against finite differences and torch, its unrolled graph's copies per step, the analysis on
it, and a training run that learns to generate two sequences from two features."""
import json
import shutil

import numpy as np
import pytest

from tinygrad_rnn import gradcheck, nn
from tinygrad_rnn.analysis import contributions, gradient_flow, state_jacobian
from tinygrad_rnn.optim import Adam

CELLS = ("rnn", "gru", "lstm")


def _example(cell, B=None, seed=0):
    rng = np.random.default_rng(seed)
    model = nn.OneToMany(3, 4, 5, cell=cell, seed=seed, dtype=np.float64)
    feature = rng.standard_normal((3,) if B is None else (B, 3))
    tokens = rng.integers(0, 4, (5,) if B is None else (5, B))
    return model, feature, tokens


def test_teacher_forced_inputs_put_the_feature_at_step_one_and_the_previous_token_after():
    model, feature, tokens = _example("rnn", B=2)
    xs = model.inputs(feature, tokens)
    assert xs.shape == (5, 2, 7)
    np.testing.assert_array_equal(xs[0, :, :3], feature)
    assert not xs[0, :, 3:].any() and not xs[1:, :, :3].any()
    np.testing.assert_array_equal(xs[1:, :, 3:].argmax(-1), tokens[:-1])
    with pytest.raises(ValueError, match=r"OneToMany.loss: tokens must have shape \(T, 2\)"):
        model.loss(feature, tokens[:, :1])
    with pytest.raises(ValueError, match=r"tokens must be integers in \[0, 4\)"):
        model.loss(feature, tokens + 4)
    with pytest.raises(ValueError, match=r"the feature must have shape \(B, 3\) or \(3,\), got \(4,\)"):
        model.generate(np.zeros(4), 3)
    with pytest.raises(ValueError, match="temperature must be ≥ 0"):
        model.generate(feature[0], 3, temperature=-1)
    sampled = model.generate(feature[0], 200, temperature=1.0, seed=3)
    np.testing.assert_array_equal(sampled, model.generate(feature[0], 200, temperature=1.0, seed=3))
    assert set(sampled) == {0, 1, 2, 3}  # samples, not the greedy path: every token turns up


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell):
    model, feature, tokens = _example(cell, B=2)
    assert gradcheck(lambda *params: model.loss(feature, tokens)[0], model.parameters(), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_torch_on_the_same_weights(cell):
    torch = pytest.importorskip("torch")
    model, feature, tokens = _example(cell, B=2)
    L, _ = model.loss(feature, tokens)
    L.backward()
    module = model.rnn.to_torch()
    logits, _ = module(torch.from_numpy(model.inputs(feature, tokens)))
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), torch.from_numpy(tokens.reshape(-1)),
                                                 reduction="sum")
    expected.backward()
    assert L.item() == pytest.approx(expected.item(), rel=1e-12)
    theirs = dict(module.named_parameters())
    if cell == "rnn":
        pairs = {"U": "rnn.weight_ih_l0", "W": "rnn.weight_hh_l0", "b": "rnn.bias_ih_l0"}
    else:
        pairs = {f"cell.{n}": f"rnn.{n}_l0" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    pairs.update(V="out.weight", c="out.bias")
    ours = dict(model.rnn.named_parameters())
    for mine, name in pairs.items():
        grad = theirs[name].grad.numpy()
        np.testing.assert_allclose(ours[mine].grad, grad.T if grad.ndim == 2 else grad, atol=1e-12, err_msg=mine)


def test_the_unrolled_graph_holds_a_copy_of_each_weight_in_every_step_box():
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed")
    import graphviz

    import viz
    model, feature, tokens = _example("rnn")
    L, out = model.loss(feature, tokens)
    L.backward()
    assert [c.name for c in out.tape.copies(model.rnn.W)] == [f"W({t})" for t in range(1, 6)]
    assert np.allclose(out.tape.step_grads(model.rnn.W).sum(axis=0), model.rnn.W.grad)
    layout = json.loads(graphviz.pipe("dot", "json0", viz.draw(L).source.encode()))
    objects = layout["objects"]
    boxes = {obj["label"]: obj for obj in objects if obj.get("name", "").startswith("cluster_")}
    assert len(boxes) == 5
    for label, box in boxes.items():
        t = int(label.split("=")[1])
        # a node's label is its name, then (after a line break) its gradient norm
        inside = {objects[i]["label"].split("\\")[0].split("\n")[0] for i in box.get("nodes", [])
                  if "label" in objects[i]}
        assert {f"W({t})", f"U({t})", f"V({t})", f"L({t})"} <= inside, (label, inside)


@pytest.mark.parametrize("cell", CELLS)
def test_the_analysis_works_on_it_and_sees_the_feature_enter_at_step_one(cell):
    model, feature, tokens = _example(cell)
    L, out = model.loss(feature, tokens)
    L.backward()
    for name, P in model.rnn.named_parameters():
        np.testing.assert_allclose(contributions(out, P).sum(axis=(0, 1)), P.grad, atol=1e-12, err_msg=name)
    U = "U" if cell == "rnn" else "cell.weight_ih"
    C = contributions(out, U)                      # (t, k, m + k_vocab, gates)
    assert not C[:, 1:, :3].any()                  # the feature's rows of U(k) only at k = 1
    assert not C[:, 0, 3:].any() and C[:, 0, :3].any()  # no previous token at step 1
    flow = gradient_flow(out)
    assert flow.norms[5, 1] == pytest.approx(np.linalg.norm(state_jacobian(out, 5, 1), 2), rel=1e-10)


def test_teacher_forcing_trains_it_to_generate_a_sequence_per_feature():
    model = nn.OneToMany(2, 4, 16, cell="lstm", seed=0, dtype=np.float64)
    features = np.eye(2)
    sequences = np.array([[0, 1, 2, 2, 3], [3, 2, 1, 0, 0]]).T       # (T, B): "hell o"-like and reversed
    optimizer = Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(150):
        L, _ = model.loss(features, sequences)
        first = L.item() if first is None else first
        optimizer.zero_grad()
        L.backward()
        optimizer.step()
    assert L.item() < 0.05 * first
    for b in range(2):
        np.testing.assert_array_equal(model.generate(features[b], 5), sequences[:, b])
