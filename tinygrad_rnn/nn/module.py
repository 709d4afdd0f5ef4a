"""Module: registers Parameters and sub-modules set as attributes, as torch.nn.Module does, and saves
them as a state dict ({dotted name: ndarray}) in an .npz checkpoint."""
import json
import os
import tempfile
import zipfile

import numpy as np

from ..tensor import Parameter

METADATA_KEY = "__metadata__"  # a JSON string stored beside the weights (vocabulary, sizes, ...)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupted, or not an .npz of arrays."""


class Module:
    def __setattr__(self, name, value):
        if isinstance(value, Parameter) and value.name is None:
            value.name = name
        object.__setattr__(self, name, value)

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs in the order they were set, sub-modules included."""
        seen = set()
        for name, value in vars(self).items():
            if isinstance(value, Parameter) and value not in seen:
                seen.add(value)
                yield prefix + name, value
            elif isinstance(value, Module):
                for sub, p in value.named_parameters(prefix + name + "."):
                    if p not in seen:
                        seen.add(p)
                        yield sub, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and its sub-modules, depth first."""
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # --- state dict and checkpoints ----------------------------------------------------------------
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
        problems = []
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        for name, p in params.items():
            if name in state and np.shape(state[name]) != p.shape:
                problems.append(f"{name!r} has shape {tuple(np.shape(state[name]))} in the state dict but "
                                f"{tuple(p.shape)} in the model")
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

    def save(self, path, metadata=None):
        """Write the state dict to `path` as an .npz (allow_pickle-free), atomically: the file appears
        complete or not at all. `metadata`: an optional JSON-serialisable dict stored beside the weights."""
        arrays = self.state_dict()
        if metadata is not None:
            arrays[METADATA_KEY] = np.array(json.dumps(metadata))
        save_npz(path, arrays)
        return path

    def load(self, path):
        """Load weights saved by save(); returns the metadata dict (or None)."""
        state, metadata = load_npz(path)
        self.load_state_dict(state)
        return metadata


def save_npz(path, arrays):
    """np.savez to a temporary file in the destination's directory, then os.replace: a crash mid-save
    leaves the old checkpoint (or none), never a truncated one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} of {path!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    """The process's umask, read without changing it where the system says it (Linux ≥ 4.7:
    /proc/self/status); elsewhere set-and-restore, which is briefly process-wide."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def load_npz(path):
    """(state dict, metadata or None) from an .npz written by save_npz; CheckpointError if it is damaged."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"load: {path!r} holds a single array (.npy), not an .npz checkpoint")
        with loaded as npz:
            state = {key: npz[key] for key in npz.files}  # reading every member checks every CRC
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, RuntimeError, NotImplementedError,
            TypeError) as e:  # (a damaged zip directory surfaces as RuntimeError or NotImplementedError)
        raise CheckpointError(f"load: {path!r} is not a readable checkpoint (truncated or corrupted .npz: "
                              f"{type(e).__name__}: {e})") from e
    metadata = None
    if METADATA_KEY in state:
        try:
            metadata = json.loads(str(state.pop(METADATA_KEY)))
        except ValueError as e:
            raise CheckpointError(f"load: {path!r} has corrupted metadata ({e})") from e
    return state, metadata
