"""Optimizers (SGD, Adam — torch.optim's update rules, step for step), the StepLR schedule and gradient
clipping, in torch.optim's shapes: `param_groups` (a list of dicts with "params" and the hyper-parameters,
read at every step), `state_dict()` / `load_state_dict()`, a scheduler that rewrites the groups' "lr".

Updates assign a new array to `p.data` rather than writing into it, so graphs and outputs recorded before
a step keep the values they were computed with (the per-step copies W(t) share W's array).
"""
import math
import numbers

import numpy as np

from .tensor import Tensor


def clip_grad_norm(params, max_norm, error_if_nonfinite=False):
    """Scale the gradients of `params` in place so that their joint L2 norm is at most max_norm, as
    torch.nn.utils.clip_grad_norm_: every gradient is multiplied by min(1, max_norm / (norm + 1e-6)).
    Returns the norm before clipping.

    max_norm must be a finite number ≥ 0 (torch accepts nan and then silently stops clipping). A NaN or
    Inf total norm raises RuntimeError with error_if_nonfinite=True (nothing is changed); otherwise the
    gradients are scaled by it as torch does (a NaN norm makes every gradient NaN, an Inf one zeroes the
    finite entries).
    """
    params = list(params)  # any iterable, as torch's (a generator would be empty on the second pass)
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not 0 <= max_norm < math.inf:
        raise ValueError(f"clip_grad_norm: max_norm must be a finite number >= 0, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite norm is handled below, by name
        total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm: the total L2 norm of the gradients is {total}, so it cannot be "
                           "clipped (error_if_nonfinite=True; with False the gradients are scaled by it, "
                           "as torch does)")
    scale = max_norm / (total + 1e-6)
    if not scale >= 1.0:  # also NaN: torch's clamp(max=1) keeps a NaN scale
        with np.errstate(invalid="ignore"):  # inf · 0 = nan, as in torch
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad * scale
    return total


class Optimizer:
    """Base class of the optimizers, as torch.optim.Optimizer.

    params: a Module, an iterable of Parameters, or a list of dicts (parameter groups), each with "params"
    and any hyper-parameters that differ from the defaults. `param_groups` holds those dicts with every
    hyper-parameter filled in; changing `group["lr"]` changes the next step. `state` maps a Parameter to
    its per-parameter buffers (created at its first update). step() updates every parameter that has a
    gradient; zero_grad() clears every .grad.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # Parameter → {buffer name: value}, as torch (keyed by the parameter itself)
        if hasattr(params, "parameters"):
            params = params.parameters()
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict {"params": ..., hyper-parameter: value, ...}; missing hyper-parameters take the
        defaults. A parameter may belong to one group only."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group is a dict with a 'params' entry, "
                            f"got {group!r}")
        params = group["params"]
        params = params.parameters() if hasattr(params, "parameters") else \
            [params] if isinstance(params, Tensor) else params
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__}: can only optimize Tensors that require grad, "
                                f"got {type(p).__name__}")
        params = list(dict.fromkeys(params))  # unique, in order
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        taken = {id(q) for g in self.param_groups for q in g["params"]}
        if any(id(p) in taken for p in params):
            raise ValueError(f"{type(self).__name__}: some parameters appear in more than one parameter group")
        filled = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check_hyperparameters(filled)
        self.param_groups.append({"params": params, **filled})

    def _check_hyperparameters(self, group):
        if not (isinstance(group["lr"], numbers.Real) and group["lr"] >= 0 and math.isfinite(group["lr"])):
            raise ValueError(f"{type(self).__name__}: learning rate must be ≥ 0 and finite, got {group['lr']}")

    @property
    def params(self):
        """Every parameter of every group, in order (the indices state_dict() uses)."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        """Set every gradient to None (torch's zero_grad(set_to_none=True)): the next backward starts anew."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, with its group's current hyper-parameters."""
        for group in self.param_groups:
            # Python numbers: a numpy float64 lr set through param_groups would turn float32 weights float64
            hyper = {k: _plain(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = np.asarray(p.grad, dtype=p.dtype)
                if g.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.step: {p.name or 'parameter'} {p.shape} has a "
                                     f"gradient of shape {g.shape}")
                p.data = self._update(p.data, g, self.state.setdefault(p, {}), hyper)

    def _update(self, w, g, state, group):
        raise NotImplementedError

    # --- state dict: torch's layout, parameters replaced by their index in `params` ---------------------
    def state_dict(self):
        """{"state": {index: {buffer: copy}}, "param_groups": [{hyper-parameters..., "params": [indices]}]},
        as torch.optim.Optimizer.state_dict() (indices count the parameters over all groups, in order)."""
        index = {id(p): i for i, p in enumerate(self.params)}
        state = {index[id(p)]: {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                for k, v in buffers.items()}
                 for p, buffers in self.state.items() if id(p) in index}
        groups = [{**{k: _plain(v) for k, v in group.items() if k != "params"},
                   "params": [index[id(p)] for p in group["params"]]} for group in self.param_groups]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def check_state_dict(self, state_dict):
        """Raise ValueError, changing nothing, unless `state_dict` fits this optimizer: as many groups of
        the same sizes, buffers with this optimizer's names and their parameter's shape, valid
        hyper-parameters."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}: expected a dict with 'state' and 'param_groups', got {state_dict!r:.80}")
        groups, params = state_dict["param_groups"], self.params
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"{name}: loaded state dict has a different number of parameter groups "
                             f"({len(groups) if isinstance(groups, list) else groups!r}, this optimizer has "
                             f"{len(self.param_groups)})")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(f"{name}: parameter group {i} has {len(saved.get('params', ()))} parameters "
                                 f"in the state dict but {len(group['params'])} here")
            self._check_hyperparameters({**group, **{k: v for k, v in saved.items() if k != "params"}})
        for index, buffers in state_dict["state"].items():
            if not (isinstance(index, (int, np.integer)) and 0 <= index < len(params)):
                raise ValueError(f"{name}: state for parameter {index!r}, but there are {len(params)}")
            unknown = set(buffers) - set(self.state_keys)
            if unknown:
                raise ValueError(f"{name}: unknown state {sorted(unknown)} for parameter {index} "
                                 f"({type(self).__name__} keeps {list(self.state_keys)})")
            for key, value in buffers.items():
                if isinstance(value, np.ndarray) and value.shape != params[index].shape:
                    raise ValueError(f"{name}: state {key!r} of parameter {index} has shape {value.shape}, "
                                     f"the parameter {params[index].shape}")

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (copies): the buffers and every group's hyper-parameters.
        Nothing changes unless the whole state dict fits (see check_state_dict)."""
        self.check_state_dict(state_dict)
        params = self.params
        self.state = {params[int(i)]: {k: np.array(v, dtype=params[int(i)].dtype, copy=True)
                                       if isinstance(v, np.ndarray) else v for k, v in buffers.items()}
                      for i, buffers in state_dict["state"].items()}
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            group.update({k: _as_tuple_if_list(v) for k, v in saved.items() if k != "params"})
        return self

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines += ([""] if i else []) + [f"Parameter Group {i}"]
            lines.append(f"    params: {len(group['params'])} tensors, "
                         f"{sum(p.data.size for p in group['params'])} values")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _as_tuple_if_list(value):  # JSON turns betas into a list
    return tuple(value) if isinstance(value, list) else value


def _plain(value):
    """numpy scalars (an lr set to np.float32(…)) as Python numbers, so a state dict is JSON-serialisable."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (same update, same rounding).

    g ← ∇ + weight_decay·w; with momentum μ: buf ← μ·buf + g (buf = g at the first step), g ← buf;
    then w ← w − lr·g. Hyper-parameters (per group): lr, momentum=0, weight_decay=0.
    State per parameter: "momentum_buffer" (with momentum only).
    """
    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        if not (group["momentum"] >= 0 and group["weight_decay"] >= 0):
            raise ValueError(f"SGD: momentum and weight_decay must be ≥ 0, got {group['momentum']}, "
                             f"{group['weight_decay']}")

    def _update(self, w, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * w
        if group["momentum"]:
            buf = state.get("momentum_buffer")
            g = state["momentum_buffer"] = g.copy() if buf is None else group["momentum"] * buf + g
        return w - group["lr"] * g


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (same update, same rounding).

    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε), with
    g = ∇ + weight_decay·w. Hyper-parameters (per group): lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0. State per parameter: "step" (its own count t), "exp_avg" (m), "exp_avg_sq" (v).
    """
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        betas = group["betas"]
        if not (len(betas) == 2 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not group["eps"] > 0:
            raise ValueError(f"Adam: eps must be > 0 (it keeps m / (√v + eps) finite), got {group['eps']}")
        if not group["weight_decay"] >= 0:
            raise ValueError(f"Adam: weight_decay must be ≥ 0, got {group['weight_decay']}")

    def _update(self, w, g, state, group):
        beta1, beta2 = group["betas"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * w
        t = state["step"] = state.get("step", 0) + 1  # per parameter, as torch (a parameter may miss steps)
        m, v = state.get("exp_avg", np.zeros_like(w)), state.get("exp_avg_sq", np.zeros_like(w))
        m = state["exp_avg"] = m + (1 - beta1) * (g - m)  # torch's lerp_: the same value, the same rounding
        v = state["exp_avg_sq"] = v * beta2 + (1 - beta2) * (g * g)
        bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
        denom = np.sqrt(v) / math.sqrt(bias2) + group["eps"]  # Python floats keep float32 arrays float32
        return w - (group["lr"] / bias1) * (m / denom)


class StepLR:
    """Multiply every group's learning rate by gamma every step_size epochs, as
    torch.optim.lr_scheduler.StepLR (the same recurrence, so the same floats): call step() once per epoch,
    after the optimizer's step(). get_last_lr() gives the current rates; state_dict() / load_state_dict()
    save and restore the schedule (torch's keys: step_size, gamma, base_lrs, last_epoch, _step_count,
    _last_lr). Creating it records each group's "initial_lr", as torch does.
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"StepLR: {type(optimizer).__name__} is not an Optimizer")
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        if not (isinstance(gamma, numbers.Real) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"StepLR: gamma must be a finite number ≥ 0, got {gamma!r}")
        self.optimizer, self.step_size, self.gamma = optimizer, int(step_size), gamma
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in group for group in optimizer.param_groups):
            raise KeyError("StepLR: resuming with last_epoch ≥ 0 needs 'initial_lr' in every parameter group "
                           "(load the optimizer's state first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()  # as torch: the first step sets last_epoch = 0 and keeps the rates

    def step(self):
        """Advance one epoch: at every non-zero multiple of step_size, lr ← lr·gamma in every group."""
        self._step_count += 1
        self.last_epoch += 1
        if self.last_epoch != 0 and self.last_epoch % self.step_size == 0:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * self.gamma
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates of the groups after the last step()."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer, as torch's schedulers (JSON-serialisable)."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        known = set(self.state_dict())
        if set(state_dict) != known:
            raise ValueError(f"StepLR.load_state_dict: expected the keys {sorted(known)}, got "
                             f"{sorted(state_dict)}")
        vars(self).update({k: (list(v) if isinstance(v, list) else v) for k, v in state_dict.items()})

    def __repr__(self):
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma}, last_epoch={self.last_epoch}, " \
               f"lr={self._last_lr})"
