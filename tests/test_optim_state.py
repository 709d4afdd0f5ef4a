"""Optimizers and the LR scheduler in torch.optim's shapes (issue 15): param_groups (per-group
hyper-parameters, lr changes that take effect), state_dict()/load_state_dict() laid out as torch's and
loadable into torch, StepLR's rates equal to torch's, and a checkpoint that resumes training bit for bit."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, nn
from tinygrad_rnn.demo import hello_example
from tinygrad_rnn.optim import SGD, Adam, StepLR

SHAPES = [(3, 4), (4,), (2, 2)]


def _params(torch=None, seed=0):
    init = [np.random.default_rng(seed + i).standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)]
    ours = [Parameter(a.copy(), name=f"p{i}") for i, a in enumerate(init)]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init] if torch else None
    return ours, theirs


def _feed(ours, theirs, torch, rng):
    for p, tp in zip(ours, theirs):
        g = rng.standard_normal(p.shape).astype(np.float32)
        p.grad, tp.grad = g, torch.tensor(g)


def _assert_same(ours, theirs, what):
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-7, err_msg=what)


OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), dict(lr=0.5, momentum=0.5)),
              ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(lr=0.05, weight_decay=0.1))]


def _two_groups(optimizer_class, params, second, defaults):
    """The first two tensors with the defaults, the third with the `second` group's hyper-parameters."""
    return optimizer_class([{"params": params[:2]}, {"params": params[2:], **second}], **defaults)


def _twins(kind, defaults, second):
    """torch, our parameters and torch's (equal values), and an optimizer of `kind` over each."""
    torch = pytest.importorskip("torch")
    ours, theirs = _params(torch)
    return (torch, ours, theirs, _two_groups({"SGD": SGD, "Adam": Adam}[kind], ours, second, defaults),
            _two_groups(getattr(torch.optim, kind), theirs, second, defaults))


@pytest.mark.parametrize("kind,defaults,second", OPTIMIZERS)
def test_param_groups_and_lr_changes_step_as_torch(kind, defaults, second):
    torch, ours, theirs, opt, topt = _twins(kind, defaults, second)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1]
    for group, tgroup in zip(opt.param_groups, topt.param_groups):  # every hyper-parameter we have, torch's value
        assert {k: v for k, v in group.items() if k != "params"}.items() <= tgroup.items()
    rng = np.random.default_rng(1)
    for step in range(12):
        if step == 5:  # a change through param_groups takes effect at the next step, in both
            for g in (opt.param_groups[0], topt.param_groups[0]):
                g["lr"] *= 0.1
        _feed(ours, theirs, torch, rng)
        opt.step()
        topt.step()
        _assert_same(ours, theirs, f"{kind} step {step}")


@pytest.mark.parametrize("kind,defaults,second", OPTIMIZERS)
def test_state_dict_has_torchs_layout_and_loads_into_torch(kind, defaults, second):
    torch, ours, theirs, opt, topt = _twins(kind, defaults, second)
    rng = np.random.default_rng(2)
    for _ in range(3):
        _feed(ours, theirs, torch, rng)
        opt.step()
        topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert set(sd) == set(tsd) == {"state", "param_groups"}
    assert list(sd["state"]) == list(tsd["state"]) == [0, 1, 2]
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]] == [[0, 1], [2]]
    for i in sd["state"]:
        assert set(sd["state"][i]) == set(tsd["state"][i])
        for key, value in sd["state"][i].items():
            np.testing.assert_allclose(value, np.asarray(tsd["state"][i][key]), rtol=1e-6, atol=1e-7)
    # ours → a fresh torch optimizer: torch steps on from our state exactly as it would have from its own
    fresh = [t.detach().clone().requires_grad_(True) for t in theirs]
    tfresh = _two_groups(getattr(torch.optim, kind), fresh, second, defaults)
    tfresh.load_state_dict({
        "state": {i: {k: torch.tensor(v) if isinstance(v, np.ndarray) else torch.tensor(float(v))
                      for k, v in buffers.items()} for i, buffers in sd["state"].items()},
        "param_groups": [{**tg, **g} for tg, g in zip(tsd["param_groups"], sd["param_groups"])]})
    g = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    for t, f, gi in zip(theirs, fresh, g):
        t.grad, f.grad = torch.tensor(gi), torch.tensor(gi)
    topt.step()
    tfresh.step()
    for t, f in zip(theirs, fresh):
        np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_state_dict_is_a_copy_and_load_state_dict_resumes_in_memory():
    ours, _ = _params()
    opt = Adam(ours, lr=0.01)
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(8)]
    for g in grads[:4]:
        for p, gi in zip(ours, g):
            p.grad = gi
        opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 99          # a copy: the optimizer is untouched
    assert not np.any(opt.state[ours[0]]["exp_avg"] == 99)
    sd = opt.state_dict()
    twins = [Parameter(p.data.copy()) for p in ours]
    resumed = Adam(twins, lr=0.5).load_state_dict(sd)   # hyper-parameters come from the state dict
    assert resumed.param_groups[0]["lr"] == 0.01 and resumed.param_groups[0]["betas"] == (0.9, 0.999)
    for g in grads[4:]:
        for p, q, gi in zip(ours, twins, g):
            p.grad, q.grad = gi, gi.copy()
        opt.step()
        resumed.step()
    for p, q in zip(ours, twins):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing():
    ours, _ = _params()
    opt = SGD(ours, lr=0.1, momentum=0.9)
    for p in ours:
        p.grad = np.ones_like(p.data)
    opt.step()
    good = opt.state_dict()
    other = SGD([Parameter(np.zeros(3))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"group 0 has 3 parameters in the state dict but 1 here"):
        other.load_state_dict(good)
    bad = opt.state_dict()
    bad["state"][1]["momentum_buffer"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 1 has shape \(7,\), the parameter \(4,\)"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"unknown state \['exp_avg'\] for parameter 0"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="learning rate must be ≥ 0 and finite, got nan"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    assert opt.state_dict()["param_groups"] == good["param_groups"]
    np.testing.assert_array_equal(opt.state[ours[1]]["momentum_buffer"], good["state"][1]["momentum_buffer"])


def test_param_group_rules_as_torch():
    torch = pytest.importorskip("torch")
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p, q]}], lr=0.1)
    tp = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        torch.optim.SGD([{"params": [tp]}, {"params": [tp]}], lr=0.1)
    opt = SGD([p], lr=0.1)
    opt.add_param_group({"params": q, "lr": 0.01, "momentum": 0.9})
    assert opt.params == [p, q] and opt.param_groups[1]["momentum"] == 0.9
    with pytest.raises(ValueError, match="learning rate"):
        Adam([{"params": [Parameter(np.zeros(1))], "lr": -1.0}])
    with pytest.raises(TypeError, match="can only optimize Tensors that require grad"):
        SGD([np.zeros(2)], lr=0.1)


def test_optimizer_repr_has_torchs_layout():
    opt = Adam([{"params": [Parameter(np.zeros((2, 3)))]}, {"params": [Parameter(np.zeros(4))], "lr": 0.1}])
    assert repr(opt).splitlines() == [
        "Adam (", "Parameter Group 0", "    params: 1 tensors, 6 values", "    betas: (0.9, 0.999)",
        "    eps: 1e-08", "    lr: 0.001", "    weight_decay: 0.0", "", "Parameter Group 1",
        "    params: 1 tensors, 4 values", "    betas: (0.9, 0.999)", "    eps: 1e-08", "    lr: 0.1",
        "    weight_decay: 0.0", ")"]


# --- StepLR against torch ---------------------------------------------------------------------------

def test_steplr_rates_equal_torchs():
    torch = pytest.importorskip("torch")
    ours, theirs = _params(torch)
    opt = SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.3}], lr=0.1)
    topt = torch.optim.SGD([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.3}], lr=0.1)
    sched, tsched = StepLR(opt, step_size=4, gamma=0.3), torch.optim.lr_scheduler.StepLR(topt, 4, gamma=0.3)
    assert sched.get_last_lr() == tsched.get_last_lr() == [0.1, 0.3]
    rng = np.random.default_rng(4)
    for epoch in range(25):
        _feed(ours, theirs, torch, rng)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert sched.get_last_lr() == tsched.get_last_lr(), epoch   # the same floats, not just close
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
    _assert_same(ours, theirs, "after 25 epochs")
    sd, tsd = sched.state_dict(), tsched.state_dict()
    assert set(sd) <= set(tsd) and all(sd[k] == tsd[k] for k in sd)
    assert opt.param_groups[1]["initial_lr"] == topt.param_groups[1]["initial_lr"] == 0.3


def test_steplr_state_dict_resumes_the_schedule():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(5):
        sched.step()
    q = Parameter(np.zeros(1))
    opt2 = SGD([q], lr=1.0)
    opt2.load_state_dict(opt.state_dict())
    sched2 = StepLR(opt2, step_size=3, gamma=0.5)
    sched2.load_state_dict(sched.state_dict())
    for _ in range(6):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
    assert sched.get_last_lr() == [0.125]
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="expected the keys"):
        sched.load_state_dict({"last_epoch": 3})


# --- a checkpoint resumes training exactly --------------------------------------------------------

def _run(model, optimizer, scheduler, xs, targets, steps, clip=None):
    for _ in range(steps):
        L, _ = model.loss(xs, targets)
        optimizer.zero_grad()
        L.backward()
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_checkpoint_resumes_training_bit_for_bit(kind, tmp_path):
    def fresh(seed):
        model, xs, targets, _ = hello_example(hidden=6, seed=seed)
        opt = Adam(model, lr=0.02) if kind == "Adam" else SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
        return model, opt, StepLR(opt, step_size=7, gamma=0.5), xs, targets

    straight, opt, sched, xs, targets = fresh(0)
    _run(straight, opt, sched, xs, targets, 40)

    first, opt, sched, xs, targets = fresh(0)
    _run(first, opt, sched, xs, targets, 20)
    path = first.save(tmp_path / "ck.npz", metadata={"updates": 20}, optimizer=opt, scheduler=sched)
    resumed, opt2, sched2, _, _ = fresh(1)  # other weights, a new optimizer and schedule: load replaces them
    assert resumed.load(path, optimizer=opt2, scheduler=sched2) == {"updates": 20}
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 20
    _run(resumed, opt2, sched2, xs, targets, 20)
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)   # bit for bit
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] * 0.5 ** 3


def test_loading_optimizer_state_that_does_not_fit_changes_nothing(tmp_path):
    model, xs, targets, _ = hello_example(hidden=6, seed=0)
    opt = Adam(model, lr=0.02)
    _run(model, opt, StepLR(opt, 5), xs, targets, 2)
    model.save(tmp_path / "ck.npz", optimizer=opt)
    model.save(tmp_path / "weights.npz")
    other, *_ = hello_example(hidden=6, seed=1)
    before = other.state_dict()
    for path, optimizer, match in [
            ("ck.npz", SGD(other, lr=0.1), r"the optimizer state is 'Adam''s, not SGD's"),
            ("weights.npz", Adam(other), r"no optimizer state"),
            ("ck.npz", Adam(other.parameters()[:2]), r"optimizer state for parameter 2, but the optimizer has 2"),
            ("ck.npz", Adam([Parameter(np.zeros(3))] + other.parameters()[1:]),
             r"'__optimizer__.0.exp_avg' has shape \(4, 6\) but its parameter \(3,\)")]:
        with pytest.raises(nn.CheckpointError, match=match):
            other.load(tmp_path / path, optimizer=optimizer)
        assert optimizer.state == {}
        for name, value in other.state_dict().items():
            np.testing.assert_array_equal(value, before[name])
    with pytest.raises(nn.CheckpointError, match="no scheduler state"):
        other.load(tmp_path / "ck.npz", scheduler=StepLR(Adam(other), 3))


def test_numpy_hyper_parameters_save_as_plain_numbers(tmp_path):
    model, xs, targets, _ = hello_example(hidden=3, seed=0)
    opt = Adam(model, lr=np.float32(0.01), betas=(np.float64(0.9), 0.99))
    _run(model, opt, StepLR(opt, 2), xs, targets, 1)
    opt.param_groups[0]["lr"] = np.float64(0.005)   # set by hand through param_groups
    _run(model, opt, StepLR(opt, 2), xs, targets, 1)
    assert all(p.dtype == np.float32 for p in model.parameters())  # a numpy float64 lr promotes nothing
    model.save(tmp_path / "ck.npz", optimizer=opt)
    other = Adam(model)
    model.load(tmp_path / "ck.npz", optimizer=other)
    assert other.param_groups[0]["lr"] == 0.005 and other.param_groups[0]["betas"] == (0.9, 0.99)


def test_load_npz_leaves_the_optimizer_buffers_out(tmp_path):
    model, xs, targets, _ = hello_example(hidden=3, seed=0)
    opt = Adam(model)
    _run(model, opt, StepLR(opt, 2), xs, targets, 2)
    model.save(tmp_path / "ck.npz", metadata={"kind": "x"}, optimizer=opt)
    state, meta = nn.load_npz(tmp_path / "ck.npz")
    assert list(state) == list(model.state_dict()) and meta == {"kind": "x"}
    model.load(tmp_path / "ck.npz")  # weights only: the optimizer's part is simply not read
