"""nn: modules, Linear/Embedding, the RNN/GRU/LSTM cells and nn.RNN(cell=...) — against PyTorch with the
same weights (outputs and gradients), against the cells' equations written out in numpy, against finite
differences (float64), and the per-step copies every cell records inside an Unroll."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, Tensor, Unroll, gradcheck, nn, no_grad

# --- Module ---------------------------------------------------------------------------------------------


class Two(nn.Module):
    def __init__(self):
        self.first = nn.Linear(3, 4, seed=0)
        self.scale = Parameter(np.ones(4, dtype=np.float32))
        self.cell = nn.GRUCell(4, 2, seed=1)
        self.shared = self.scale  # registered once


def test_module_registers_parameters_and_submodules_in_order():
    m = Two()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["first.weight", "first.bias", "scale", "cell.weight_ih", "cell.weight_hh",
                     "cell.bias_ih", "cell.bias_hh"]
    assert len(m.parameters()) == 7
    assert m.scale.name == "scale" and m.first.weight.name == "weight"
    for p in m.parameters():
        p.grad = np.ones_like(p.data)
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_vanilla_rnn_keeps_lecture_names_and_cell_shares_them():
    m = nn.RNN(4, 3, 5, seed=0)
    assert [n for n, _ in m.named_parameters()] == ["U", "W", "b", "V", "c"]
    assert m.cell.U is m.U and m.cell.W is m.W and m.cell.b is m.b
    assert list(m.state_dict()) == ["U", "W", "b", "V", "c"]


def test_rnn_init_is_unchanged_by_the_cell_option():
    """nn.RNN(seed) draws U, W, b, V, c in that order from default_rng(seed), as before cells existed."""
    m = nn.RNN(4, 3, 5, seed=7)
    rng = np.random.default_rng(7)
    for p in (m.U, m.W, m.b, m.V, m.c):
        expected = rng.uniform(-1 / np.sqrt(3), 1 / np.sqrt(3), p.shape).astype(np.float32)
        np.testing.assert_array_equal(p.data, expected)


# --- state dict and checkpoints -------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_dict_round_trip_reproduces_outputs_exactly(cell, tmp_path):
    xs = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    a = nn.RNN(3, 4, 6, seed=1, cell=cell)
    b = nn.RNN(3, 4, 6, seed=2, cell=cell)
    b.load_state_dict(a.state_dict())
    for ya, yb in zip(a(xs).logits, b(xs).logits):
        np.testing.assert_array_equal(ya.data, yb.data)
    path = tmp_path / "model.npz"
    a.save(path, metadata={"note": "hi"})
    c = nn.RNN(3, 4, 6, seed=3, cell=cell)
    assert c.load(path) == {"note": "hi"}
    for ya, yc in zip(a(xs).logits, c(xs).logits):
        np.testing.assert_array_equal(ya.data, yc.data)
    assert [f.name for f in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left behind


def test_state_dict_is_a_copy():
    m = nn.Linear(2, 2, seed=0)
    state = m.state_dict()
    state["weight"][:] = 99
    assert not np.any(m.weight.data == 99)


def test_load_state_dict_reports_missing_unexpected_and_shape_mismatch():
    m = nn.RNN(3, 4, 5, seed=0)
    state = m.state_dict()
    before = m.W.data.copy()
    bad = dict(state, extra=np.zeros(2), W=np.zeros((4, 5)))
    del bad["c"]
    with pytest.raises(ValueError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert "missing keys ['c']" in msg and "unexpected keys ['extra']" in msg
    assert "'W' has shape (4, 5) in the state dict but (4, 4) in the model" in msg
    np.testing.assert_array_equal(m.W.data, before)  # nothing changed


def test_truncated_or_garbled_checkpoint_gives_a_clear_error(tmp_path):
    m = nn.RNN(3, 4, 5, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    raw = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    garbled = bytearray(raw)
    garbled[len(raw) // 3: len(raw) // 3 + 64] = b"\x00" * 64  # inside the first arrays' data: CRC fails
    (tmp_path / "garbled.npz").write_bytes(bytes(garbled))
    (tmp_path / "text.npz").write_text("not a checkpoint")
    for name in ("truncated.npz", "garbled.npz", "text.npz"):
        with pytest.raises(nn.CheckpointError, match="not a readable checkpoint"):
            nn.RNN(3, 4, 5).load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        m.load(tmp_path / "missing.npz")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    m = nn.Linear(2, 3, seed=0)
    path = tmp_path / "m.npz"
    m.save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash mid-save")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        nn.Linear(2, 3, seed=1).save(path)
    assert path.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["m.npz"]


# --- Linear and Embedding ------------------------------------------------------------------------------

def test_linear_layout_and_embedding_gradient_adds_over_repeats():
    lin = nn.Linear(3, 2, seed=0)
    assert lin.weight.shape == (3, 2) and lin.bias.shape == (2,)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(lin(x).data, x @ lin.weight.data + lin.bias.data, rtol=1e-6)
    assert nn.Linear(3, 2, bias=False).bias is None
    with pytest.raises(ValueError, match=r"Linear: input must have 3 features.*\(2, 4\)"):
        lin(np.zeros((2, 4)))
    emb = nn.Embedding(5, 3, seed=0)
    out = emb(np.array([1, 4, 1]))
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad[:, 0], [0, 2, 0, 0, 1])
    with pytest.raises(ValueError, match=r"Embedding: ids must be in \[0, 5\)"):
        emb(np.array([5]))


def test_linear_matches_torch_outputs_and_gradients():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 3)
    lin = nn.Linear(4, 3).load_torch(ref)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    out = lin(x)
    (out * Tensor(w)).sum().backward()
    tx = torch.tensor(x)
    tout = ref(tx)
    (tout * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad.numpy().T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.bias.grad, ref.bias.grad.numpy(), rtol=1e-5, atol=1e-6)
    back = lin.to_torch()
    np.testing.assert_array_equal(back.weight.detach().numpy(), ref.weight.detach().numpy())
    with pytest.raises(ValueError, match=r"torch weight has shape \(3, 4\), expected \(4, 3\)"):
        nn.Linear(3, 4).load_torch(ref)


# --- cells against PyTorch --------------------------------------------------------------------------------

TORCH_CELLS = {"rnn": ("RNNCell", nn.RNNCell), "gru": ("GRUCell", nn.GRUCell),
               "lstm": ("LSTMCell", nn.LSTMCell)}


def _run_cell_both(torch, kind, dtype, steps=3, batch=2, n=3, d=4):
    """Unroll our cell and torch's (same weights) for a few steps; loss = Σ_t w_t · h_t. Returns both."""
    torch_name, ours_cls = TORCH_CELLS[kind]
    torch.manual_seed(0)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    ref = getattr(torch.nn, torch_name)(n, d, dtype=tdtype)
    cell = ours_cls(n, d, dtype=dtype).load_torch(ref)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((steps, batch, n)).astype(dtype)
    ws = rng.standard_normal((steps, batch, d)).astype(dtype)
    h0 = rng.standard_normal((batch, d)).astype(dtype)
    c0 = rng.standard_normal((batch, d)).astype(dtype)

    tape, state, loss = Unroll(), (h0, c0) if kind == "lstm" else h0, 0
    for t in range(steps):
        with tape.step(t + 1):
            state = cell(xs[t], state)
            h = state[0] if kind == "lstm" else state
            loss = loss + (h * Tensor(ws[t])).sum()
    loss.backward()

    tstate = (torch.tensor(h0), torch.tensor(c0)) if kind == "lstm" else torch.tensor(h0)
    tloss = 0
    for t in range(steps):
        tstate = ref(torch.tensor(xs[t]), tstate)
        th = tstate[0] if kind == "lstm" else tstate
        tloss = tloss + (th * torch.tensor(ws[t])).sum()
    tloss.backward()
    return cell, ref, tape, loss, tloss


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cells_match_torch_outputs_and_gradients(kind):
    torch = pytest.importorskip("torch")
    cell, ref, tape, loss, tloss = _run_cell_both(torch, kind, np.float32)
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    if kind == "rnn":
        pairs = [(cell.U, ref.weight_ih.grad.T), (cell.W, ref.weight_hh.grad.T), (cell.b, ref.bias_ih.grad)]
        np.testing.assert_allclose(ref.bias_ih.grad.numpy(), ref.bias_hh.grad.numpy())
    else:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        pairs = [(getattr(cell, name), getattr(ref, name).grad) for name in names]
        pairs = [(p, g.T if g.ndim == 2 else g) for p, g in pairs]  # our weights are torch's transposed
    for p, g in pairs:
        np.testing.assert_allclose(p.grad, g.numpy(), rtol=1e-4, atol=1e-5, err_msg=p.name)
    # the cell ran inside steps: every parameter has per-step copies summing to its gradient
    for p in cell.parameters():
        assert len(tape.copies(p)) == 3
        np.testing.assert_allclose(tape.step_grads(p).sum(axis=0), p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cells_to_torch_round_trip(kind):
    torch = pytest.importorskip("torch")
    cls = TORCH_CELLS[kind][1]
    cell = cls(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    ours = cell(x)
    theirs = cell.to_torch()(torch.tensor(x))
    if kind == "lstm":
        ours, theirs = ours[0], theirs[0]
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sigmoid_cell_has_no_torch_equivalent():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="sigmoid"):
        nn.RNNCell(2, 3, nonlinearity="sigmoid").to_torch()


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gated_cells_gradcheck_float64(kind):
    cell = TORCH_CELLS[kind][1](2, 3, seed=0, dtype=np.float64)
    xs = np.random.default_rng(1).standard_normal((3, 2, 2))

    def loss(*params):
        state = None
        for x in xs:
            state = cell(x, state)
        h = state[0] if kind == "lstm" else state
        return (h * h).sum()
    gradcheck(loss, cell.parameters())


def test_gru_equations_written_out():
    """GRUCell against PyTorch's documented equations in plain numpy (no torch needed)."""
    cell = nn.GRUCell(3, 2, seed=0, dtype=np.float64)
    x, h = np.random.default_rng(0).standard_normal((2, 3)), np.random.default_rng(1).standard_normal((2, 2))
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    gi = x @ cell.weight_ih.data + cell.bias_ih.data
    gh = h @ cell.weight_hh.data + cell.bias_hh.data
    r, z = sig(gi[:, :2] + gh[:, :2]), sig(gi[:, 2:4] + gh[:, 2:4])
    n = np.tanh(gi[:, 4:] + r * gh[:, 4:])
    np.testing.assert_allclose(cell(x, h).data, (1 - z) * n + z * h, rtol=1e-12)


def test_cell_errors_name_shapes_and_step():
    cell = nn.GRUCell(3, 4)
    tape = Unroll()
    with pytest.raises(ValueError, match=r"GRUCell: state must have shape \(2, 4\).*got \(2, 5\) at step 7"):
        with tape.step(7):
            cell(np.zeros((2, 3)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"LSTMCell: input must have shape \(B, 3\) or \(3,\), got \(2, 2\)"):
        nn.LSTMCell(3, 4)(np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"pair \(h, c\)"):
        nn.LSTMCell(3, 4)(np.zeros(3), np.zeros(4))


def test_unbatched_cells_and_zero_state():
    for cls in (nn.RNNCell, nn.GRUCell):
        cell = cls(3, 4, seed=0)
        x = np.ones(3, dtype=np.float32)
        np.testing.assert_array_equal(cell(x).data, cell(x, np.zeros(4, dtype=np.float32)).data)
        assert cell(x).shape == (4,)
    h, c = nn.LSTMCell(3, 4, seed=0)(np.ones(3))
    assert h.shape == c.shape == (4,)


# --- nn.RNN with gated cells ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gated_rnn_records_per_step_copies(kind):
    m = nn.RNN(4, 5, 4, seed=0, cell=kind)
    xs = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
    L, out = m.loss(xs, np.array([1, 2, 2, 3]))
    L.backward()
    assert [n for n, _ in m.named_parameters()] == ["cell.weight_ih", "cell.weight_hh", "cell.bias_ih",
                                                     "cell.bias_hh", "V", "c"]
    for p in m.parameters():
        copies = out.tape.copies(p)
        assert [c.step for c in copies] == [1, 2, 3, 4] and copies[0].op == "copy"
        np.testing.assert_allclose(out.tape.step_grads(p).sum(axis=0), p.grad, rtol=1e-5, atol=1e-6)
    assert [s.name for s in out.states] == ["s(0)", "s(1)", "s(2)", "s(3)", "s(4)"]
    assert [y.name for y in out.logits] == ["y(1)", "y(2)", "y(3)", "y(4)"]
    assert [l.name for l in out.losses] == ["L(1)", "L(2)", "L(3)", "L(4)"]
    assert out.preactivations == []
    expected = ["C(0)", "C(1)", "C(2)", "C(3)", "C(4)"] if kind == "lstm" else []
    assert [c.name for c in out.cell_states] == expected


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_rnn_matches_torch_module_with_same_weights(kind):
    torch = pytest.importorskip("torch")
    m = nn.RNN(3, 4, 5, seed=0, cell=kind, dtype=np.float64)
    ref = m.to_torch()
    xs = np.random.default_rng(0).standard_normal((6, 2, 3))
    targets = np.random.default_rng(1).integers(0, 5, size=(6, 2))
    L, out = m.loss(xs, targets)
    L.backward()
    logits, _ = ref(torch.tensor(xs))
    tL = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), torch.tensor(targets).reshape(-1),
                                           reduction="sum")
    tL.backward()
    np.testing.assert_allclose(np.stack([y.data for y in out.logits]), logits.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(L.item(), tL.item(), rtol=1e-10)
    np.testing.assert_allclose(m.V.grad, ref.out.weight.grad.numpy().T, rtol=1e-9, atol=1e-12)
    w_hh = m.W if kind == "rnn" else m.cell.weight_hh
    np.testing.assert_allclose(w_hh.grad, ref.rnn.weight_hh_l0.grad.numpy().T, rtol=1e-9, atol=1e-12)
    other = nn.RNN(3, 4, 5, seed=9, cell=kind, dtype=np.float64).load_torch(ref)
    for (name, p), q in zip(m.named_parameters(), other.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="cell="):
        nn.RNN(3, 4, 5, cell="gru" if kind != "gru" else "lstm").load_torch(ref)


def test_lstm_rnn_accepts_initial_pair_and_step_api():
    m = nn.RNN(3, 4, 3, seed=0, cell="lstm")
    xs = np.eye(3, dtype=np.float32)[[0, 1, 2]]
    h0, c0 = np.full(4, 0.1, dtype=np.float32), np.full(4, -0.2, dtype=np.float32)
    out = m(xs, s0=(h0, c0))
    state = (h0, c0)
    with no_grad():
        for t in range(3):
            y, state = m.step(xs[t], state)
            np.testing.assert_allclose(y.data, out.logits[t].data, rtol=1e-6)
    with pytest.raises(TypeError, match="pair"):
        m(xs, s0=h0)
    with pytest.raises(ValueError, match="nonlinearity applies to the vanilla cell only"):
        nn.RNN(3, 4, 3, cell="gru", nonlinearity="sigmoid")


def test_rnn_loads_a_batch_first_torch_module_and_matches_it():
    torch = pytest.importorskip("torch")
    m = nn.RNN(3, 4, 5, seed=0, dtype=np.float64)
    ref = m.to_torch()
    batch_first = torch.nn.RNN(3, 4, batch_first=True, dtype=torch.float64)
    batch_first.load_state_dict(ref.rnn.state_dict())
    ref.rnn = batch_first
    other = nn.RNN(3, 4, 5, seed=9, dtype=np.float64).load_torch(ref)
    xs = np.random.default_rng(0).standard_normal((6, 2, 3))     # (T, B, n) for us
    logits, _ = ref(torch.tensor(xs.transpose(1, 0, 2)))          # (B, T, n) for the batch_first module
    out = other(xs)
    np.testing.assert_allclose(np.stack([y.data for y in out.logits]),
                               logits.detach().numpy().transpose(1, 0, 2), rtol=1e-10)


def test_saved_checkpoint_gets_the_umask_permissions(tmp_path):
    import os
    import stat
    old = os.umask(0o027)
    try:
        nn.Linear(2, 2, seed=0).save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640
