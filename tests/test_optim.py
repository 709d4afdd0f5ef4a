"""Optimizers: SGD (momentum, weight decay) and Adam match torch.optim step for step on the same gradients;
clip_grad_norm returns the pre-clip norm."""
import numpy as np
import pytest

from tinygrad_rnn import Parameter, nn
from tinygrad_rnn.optim import SGD, Adam, clip_grad_norm


def _run_both(torch, make_ours, make_theirs, steps=6, dtype=np.float32):
    """Both optimizers on the same parameters, fed the same (random, step-dependent) gradients."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for step in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt.zero_grad()
        topt.zero_grad()
        for p, tp, g in zip(ours, theirs, grads):
            p.grad = g
            tp.grad = torch.tensor(g)
        if step == 3:  # a parameter without a gradient is skipped by both
            ours[1].grad = None
            theirs[1].grad = None
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=f"step {step}")
            assert p.data.dtype == dtype
    return ours


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.01)])
def test_sgd_matches_torch(momentum, weight_decay):
    torch = pytest.importorskip("torch")
    _run_both(torch, lambda ps: SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay),
              lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay))


@pytest.mark.parametrize("lr,betas,eps", [(1e-3, (0.9, 0.999), 1e-8), (0.05, (0.8, 0.99), 1e-6)])
def test_adam_matches_torch(lr, betas, eps):
    torch = pytest.importorskip("torch")
    _run_both(torch, lambda ps: Adam(ps, lr=lr, betas=betas, eps=eps),
              lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps), steps=8)


def test_sgd_formula_without_torch():
    p = Parameter(np.array([1.0, 2.0]))
    opt = SGD([p], lr=0.5, momentum=0.9)
    p.grad = np.array([1.0, -1.0])
    opt.step()                                   # buf = g
    np.testing.assert_allclose(p.data, [0.5, 2.5])
    p.grad = np.array([1.0, -1.0])
    opt.step()                                   # buf = 0.9 g + g
    np.testing.assert_allclose(p.data, [0.5 - 0.95, 2.5 + 0.95])


def test_adam_first_step_is_lr_times_sign():
    """At step 1 the bias corrections make Adam's update lr·g/(|g| + ε′) ≈ lr·sign(g)."""
    p = Parameter(np.array([1.0, -3.0, 0.5]))
    opt = Adam([p], lr=0.01)
    p.grad = np.array([4.0, -0.002, 1e3])
    opt.step()
    np.testing.assert_allclose(p.data, [0.99, -2.99, 0.49], rtol=1e-6)


def test_optimizer_accepts_a_module_and_zero_grad_clears():
    m = nn.Linear(2, 3, seed=0)
    opt = Adam(m)
    assert opt.params == m.parameters()
    for p in m.parameters():
        p.grad = np.ones_like(p.data)
    old = m.weight.data
    opt.step()
    assert m.weight.data is not old          # a new array: recorded graphs keep their values
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        SGD(m.parameters(), lr=-1)


def test_clip_grad_norm_returns_pre_clip_norm():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()), 1.0, rtol=1e-5)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)


def test_adam_rejects_bad_eps_and_weight_decay():
    from tinygrad_rnn import Parameter, optim
    w = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="eps must be > 0"):
        optim.Adam([w], eps=0)
    with pytest.raises(ValueError, match="weight_decay must be ≥ 0"):
        optim.Adam([w], weight_decay=-1e-4)
