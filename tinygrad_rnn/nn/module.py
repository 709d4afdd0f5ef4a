"""Module: the base of every layer and model, in torch.nn.Module's shape.

Parameters and sub-modules set as attributes are registered by being attributes (no __init__ to call);
`named_parameters()`, `children()`, `modules()`, `apply(fn)`, `train()` / `eval()` and `zero_grad()` walk
them as torch does. The weights are saved as a state dict ({dotted name: ndarray}) in an .npz checkpoint
(`save` / `load`, see checkpoint.py), optionally with an optimizer's and an LR scheduler's state so that
training resumes exactly.
"""
import re

import numpy as np

from ..tensor import Parameter
from . import checkpoint as _checkpoint
from .checkpoint import (METADATA_KEY, OPTIMIZER_KEY, SCHEDULER_KEY, CheckpointError, load_npz,  # noqa: F401
                         read_checkpoint, save_npz)

_OPTIMIZER_ARRAY = re.compile(re.escape(OPTIMIZER_KEY) + r"\.(\d+)\.(\w+)")


class Module:
    """Base class of layers and models (as torch.nn.Module).

    Set Parameters and sub-modules as attributes in __init__; define forward(); call the module.
    `training` is True until `eval()` (or `train(False)`) sets it to False on this module and every
    sub-module; a module reads it in forward() to behave differently in evaluation.

    >>> class Affine(Module):
    ...     def __init__(self):
    ...         self.w = Parameter(np.ones(2))
    ...     def forward(self, x):
    ...         return x * self.w
    >>> [name for name, _ in Affine().named_parameters()]
    ['w']
    """

    training = True  # the class default: a module is in training mode until eval()

    def __setattr__(self, name, value):
        if isinstance(value, Parameter) and value.name is None:
            value.name = name
        object.__setattr__(self, name, value)

    # --- the module tree (walked with explicit stacks: no recursion) ----------------------------------
    def named_children(self):
        """(attribute name, sub-module) of the direct sub-modules, each once, in the order they were set."""
        seen = set()
        for name, value in vars(self).items():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self):
        """The direct sub-modules (as torch's children())."""
        return (module for _, module in self.named_children())

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ("" or `prefix`) and every sub-module, depth first, each
        module once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child}" if name else child, m) for child, m in module.named_children()]
            stack.extend(reversed(children))

    def modules(self):
        """This module and its sub-modules, depth first."""
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs in the order they were set, a sub-module's parameters where the
        sub-module was set, each Parameter once (a parameter shared by two modules keeps its first name)."""
        seen, stack = set(), [(prefix, iter(vars(self).items()))]
        while stack:
            path, attributes = stack[-1]
            entry = next(attributes, None)
            if entry is None:
                stack.pop()
                continue
            name, value = entry
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                yield path + name, value
            elif isinstance(value, Module):
                stack.append((path + name + ".", iter(vars(value).items())))

    def parameters(self):
        """The Parameters of named_parameters(), as a list."""
        return [p for _, p in self.named_parameters()]

    def apply(self, fn):
        """Call fn(module) on every sub-module, then on this module (torch's order: children first);
        returns self. Each module is visited once, even when shared."""
        seen, stack = set(), [(self, False)]
        while stack:
            module, children_done = stack.pop()
            if children_done:
                fn(module)
            elif id(module) not in seen:
                seen.add(id(module))
                stack.append((module, True))
                stack.extend((child, False) for child in reversed(list(module.children())))
        return self

    def train(self, mode=True):
        """Set `training = mode` on this module and every sub-module; returns self (as torch)."""
        if not isinstance(mode, bool):
            raise ValueError(f"{type(self).__name__}.train: training mode is expected to be boolean, "
                             f"got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Evaluation mode: the same as train(False); returns self."""
        return self.train(False)

    def zero_grad(self):
        """Set every parameter's gradient to None (torch's default set_to_none=True)."""
        for p in self.parameters():
            p.grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # --- repr: torch's layout, one "(name): child" line per sub-module --------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses: its own parameters' names, shapes and dtype."""
        own = [(name, v) for name, v in vars(self).items() if isinstance(v, Parameter)]
        if not own:
            return ""
        dtypes = sorted({str(p.dtype) for _, p in own})
        return ", ".join(f"{name}: {tuple(p.shape)}" for name, p in own) + f"; {'/'.join(dtypes)}"

    def __repr__(self):
        children = list(self.named_children())
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}(" + (f"{extra}" if extra else "")]
        for name, child in children:  # a sub-module's own repr, indented (a module tree is a few levels deep)
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"

    # --- state dict and checkpoints ------------------------------------------------------------------
    def state_dict(self):
        """{dotted parameter name: a copy of its array}, in registration order."""
        return {name: np.array(p.data, copy=True) for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy the arrays of `state` into the parameters (cast to each parameter's dtype).

        Every key must match a parameter and every parameter must be given, with its exact shape;
        otherwise nothing is changed and a ValueError lists all missing/unexpected keys and shape mismatches.
        """
        params = dict(self.named_parameters())
        state = {k: v for k, v in state.items() if k != METADATA_KEY}
        problems = state_problems({name: p.shape for name, p in params.items()},
                                  {name: np.shape(v) for name, v in state.items()})
        converted = {}
        for name, p in params.items():
            if name in state:
                try:  # new arrays: graphs recorded before keep theirs
                    converted[name] = np.array(state[name], dtype=p.dtype, copy=True)
                except (TypeError, ValueError) as e:
                    problems.append(f"{name!r} cannot be converted to {p.dtype} ({e})")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        for name, p in params.items():  # every check passed: now change the model
            p.data = converted[name]
        return self

    def save(self, path, metadata=None, optimizer=None, scheduler=None):
        """Write the weights to `path` as an .npz (no pickle), atomically: the file appears complete or not
        at all, with the old file's permissions. `metadata`: an optional JSON-serialisable value stored
        beside the weights; `optimizer` / `scheduler`: their state_dict() too, for load() to resume from.
        Non-finite weights are refused before anything is written (the checkpoint could not be loaded)."""
        arrays = self.state_dict()
        for name, array in arrays.items():
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{type(self).__name__}.save: parameter {name!r} {array.shape} has "
                                 f"{int(np.sum(~np.isfinite(array)))} non-finite values; nothing was written "
                                 f"to {str(path)!r}")
        if metadata is not None:
            arrays[METADATA_KEY] = _checkpoint.json_member(metadata)
        if optimizer is not None:
            arrays.update(_optimizer_members(optimizer))
        if scheduler is not None:
            arrays[SCHEDULER_KEY] = _checkpoint.json_member({"type": type(scheduler).__name__,
                                                             "state": scheduler.state_dict()})
        save_npz(path, arrays)
        return path

    def load(self, path, optimizer=None, scheduler=None):
        """Load what save() wrote; returns the metadata (or None).

        The member names and shapes are checked against this model (and `optimizer`) from the .npy headers
        before any array is decompressed; weights must be finite real floats. If anything does not fit,
        a CheckpointError names the file and nothing — model, optimizer, scheduler — is changed."""
        checkpoint = read_checkpoint(path)
        names = checkpoint.weight_names
        problems = state_problems({name: p.shape for name, p in self.named_parameters()},
                                  {name: checkpoint.members[name][0] for name in names})
        if optimizer is not None:
            problems += _optimizer_header_problems(checkpoint, optimizer)
        if scheduler is not None and SCHEDULER_KEY not in checkpoint.json:
            problems.append("no scheduler state (save it with save(..., scheduler=...))")
        if problems:
            raise CheckpointError(f"load: {checkpoint.path!r} does not fit this {type(self).__name__}: "
                                  + "; ".join(problems))
        weights = checkpoint.read_arrays(names)
        optimizer_state = _optimizer_state(checkpoint) if optimizer is not None else None
        if optimizer is not None:
            optimizer.check_state_dict(optimizer_state)  # before anything changes
        if scheduler is not None:
            _check_scheduler_state(checkpoint, scheduler)
        try:
            self.load_state_dict(weights)
        except ValueError as e:
            raise CheckpointError(f"load: {checkpoint.path!r}: {e}") from e
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint.json[SCHEDULER_KEY]["state"])
        return checkpoint.metadata


def state_problems(expected, given):
    """What keeps `given` {name: shape} from filling `expected` {name: shape}: missing and unexpected
    names, and shape mismatches, as sentences (empty when it fits)."""
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for name, shape in expected.items():
        if name in given and tuple(given[name]) != tuple(shape):
            problems.append(f"{name!r} has shape {tuple(given[name])} in the state dict but "
                            f"{tuple(shape)} in the model")
    return problems


# --- the optimizer's state in a checkpoint: arrays as members, the rest as one JSON member -------------

def _optimizer_members(optimizer):
    state_dict = optimizer.state_dict()
    arrays, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{OPTIMIZER_KEY}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    arrays[OPTIMIZER_KEY] = _checkpoint.json_member({"type": type(optimizer).__name__, "state": scalars,
                                                     "param_groups": state_dict["param_groups"]})
    return arrays


def _optimizer_header_problems(checkpoint, optimizer):
    saved = checkpoint.json.get(OPTIMIZER_KEY)
    if not isinstance(saved, dict):
        return ["no optimizer state (save it with save(..., optimizer=...))"]
    if saved.get("type") != type(optimizer).__name__:
        return [f"the optimizer state is {saved.get('type')!r}'s, not {type(optimizer).__name__}'s"]
    params, problems = optimizer.params, []
    for name, (shape, _) in checkpoint.members.items():
        match = _OPTIMIZER_ARRAY.fullmatch(name)
        if name.startswith(OPTIMIZER_KEY + ".") and match is None:
            problems.append(f"unexpected optimizer member {name!r}")
        elif match and int(match.group(1)) >= len(params):
            problems.append(f"optimizer state for parameter {match.group(1)}, but the optimizer has "
                            f"{len(params)} parameters")
        elif match and tuple(shape) != params[int(match.group(1))].shape:
            problems.append(f"optimizer state {name!r} has shape {tuple(shape)} but its parameter "
                            f"{params[int(match.group(1))].shape}")
    return problems


def _optimizer_state(checkpoint):
    saved = checkpoint.json[OPTIMIZER_KEY]
    arrays = checkpoint.read_arrays([n for n in checkpoint.members if n.startswith(OPTIMIZER_KEY + ".")])
    state = {}
    for index, scalars in saved.get("state", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    for name, array in arrays.items():
        match = _OPTIMIZER_ARRAY.fullmatch(name)
        state.setdefault(int(match.group(1)), {})[match.group(2)] = array
    return {"state": state, "param_groups": saved.get("param_groups")}


def _check_scheduler_state(checkpoint, scheduler):
    saved = checkpoint.json[SCHEDULER_KEY]
    if not isinstance(saved, dict) or saved.get("type") != type(scheduler).__name__ or \
            set(saved.get("state", {})) != set(scheduler.state_dict()):
        raise CheckpointError(f"load: {checkpoint.path!r} holds the state of a "
                              f"{saved.get('type') if isinstance(saved, dict) else 'unknown'} scheduler, "
                              f"not of this {type(scheduler).__name__}")
