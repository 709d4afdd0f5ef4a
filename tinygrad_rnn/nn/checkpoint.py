""".npz checkpoints that are written atomically and read defensively.

Writing: np.savez through outputs.write_atomically (a temporary file beside the target, fsync, os.replace) —
a crash leaves the old file (or none), never a truncated one; the next save of that path removes what a
killed writer left behind, and a temporary file is never read as a checkpoint.

Reading: every member's .npy header (name, shape, dtype) is read and checked before any array data is
decompressed — a small crafted file cannot make load allocate gigabytes — then the arrays are read
(each member's CRC is checked) and must be finite real floats.
"""
import json
import math
import os
import zipfile

import numpy as np

from ..outputs import is_temp_file, write_atomically

METADATA_KEY = "__metadata__"  # a JSON string stored beside the weights (vocabulary, sizes, ...)
OPTIMIZER_KEY = "__optimizer__"  # the optimizer's JSON part; its arrays are "__optimizer__.<index>.<key>"
SCHEDULER_KEY = "__scheduler__"
MAX_JSON_CHARS = 1 << 22        # a JSON member larger than this is not one save() wrote
# a deflated member that expands more than this (beyond a 1 MiB allowance) is a zip bomb: save() never
# compresses, and float weights compressed by np.savez_compressed shrink by a few percent only
MAX_COMPRESSION_RATIO = 64
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip's end record
_NPY_MAGIC = b"\x93NUMPY"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupted, crafted, or not an .npz of arrays."""


# --- writing ------------------------------------------------------------------------------------------

def save_npz(path, arrays):
    """np.savez written atomically (outputs.write_atomically: a temporary file beside the target, fsync,
    os.replace): a crash mid-save leaves the old checkpoint (or none), never a truncated one. An existing
    target keeps its permission bits; a new one gets 0666 minus the umask; what killed saves of this path
    left is removed. Errors name `path`, never the temporary file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} of {path!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path!r} is a directory, not a checkpoint file")
    write_atomically(path, lambda f: np.savez(f, **arrays), what="the checkpoint ", create_folder=False)


def json_member(value):
    """A JSON-serialisable value as the 0-d text array a checkpoint stores it in."""
    return np.array(json.dumps(value))


# --- reading ------------------------------------------------------------------------------------------

class Checkpoint:
    """An opened checkpoint whose headers have been checked: `members` {name: (shape, dtype)} of the arrays,
    `json` {name: decoded value} of the JSON members (`metadata` is the save's metadata or None).
    Nothing else is decompressed until read_arrays()."""

    def __init__(self, path, members, json_members, infos):
        self.path, self.members, self.json, self._infos = path, members, json_members, infos

    @property
    def metadata(self):
        return self.json.get(METADATA_KEY)

    @property
    def weight_names(self):
        """The array members that are model weights (not an optimizer's buffers)."""
        return [name for name in self.members if not name.startswith(OPTIMIZER_KEY + ".")]

    def check_shapes(self, expected, what="the model its metadata describes"):
        """Raise CheckpointError unless the weights are exactly the members named in `expected` {name: shape},
        each with that shape — for building a model from the metadata only once its sizes agree with the
        arrays (a metadata saying hidden=10**6 must not allocate a 10⁶×10⁶ matrix before the mismatch is
        found). A weight member the model has no place for is a problem too, as in Module.load (torch's
        strict load_state_dict): the file is another model's."""
        problems = [f"no member {name!r}" if name not in self.members else
                    f"{name!r} is {self.members[name][0]}, not {tuple(shape)}"
                    for name, shape in expected.items()
                    if name not in self.members or self.members[name][0] != tuple(shape)]
        unexpected = [name for name in self.weight_names if name not in expected]
        if unexpected:
            problems.append(f"unexpected members {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""))
        if problems:
            raise CheckpointError(f"load: {self.path!r} does not hold {what}: " + "; ".join(problems))

    def read_arrays(self, names=None):
        """{name: array} for `names` (default: every array member), CRCs checked; complex or non-finite
        values are a CheckpointError."""
        names = list(self.members) if names is None else list(names)
        arrays = {}
        with _open_zip(self.path) as archive:
            for name in names:
                arrays[name] = _read_member(archive, self._infos[name], self.path, name)
        return arrays


def read_checkpoint(path):
    """Open `path` and check it from its headers only: a zip of .npy members, each header readable, real
    float arrays (or the JSON strings save() writes), sizes consistent with the archive. Returns a
    Checkpoint; raises CheckpointError ("not a tinygrad_rnn checkpoint" for files of another kind)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if is_temp_file(path):
        raise CheckpointError(f"load: {path!r} is the unfinished temporary file of a save, not a checkpoint "
                              "(it is never read; the next save of its target removes it)")
    if os.path.isdir(path):
        raise CheckpointError(f"load: {path!r} is a directory, not a tinygrad_rnn checkpoint")
    with open(path, "rb") as f:
        start = f.read(8)
    if not start.startswith(_ZIP_MAGIC):
        kind = "a single .npy array" if start.startswith(_NPY_MAGIC) else f"a file starting with {start!r}"
        raise CheckpointError(f"load: {path!r} is not a tinygrad_rnn checkpoint (not a readable checkpoint "
                              f".npz archive: {kind})")
    members, json_members, infos = {}, {}, {}
    with _open_zip(path) as archive:
        for info in _archive_infos(archive, path):
            name = info.filename[:-len(".npy")]
            shape, dtype = _read_header(archive, info, path, name)
            infos[name] = info
            if dtype.kind == "U":
                json_members[name] = _read_json(archive, info, path, name, shape, dtype)
            else:
                members[name] = (shape, dtype)
    return Checkpoint(path, members, json_members, infos)


def load_npz(path):
    """(state dict of the weights, metadata or None) from an .npz written by save_npz; CheckpointError if
    it is damaged. An optimizer's buffers saved beside the weights are left out (Module.load reads them)."""
    checkpoint = read_checkpoint(path)
    return checkpoint.read_arrays(checkpoint.weight_names), checkpoint.metadata


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as e:
        raise _damaged(path, e) from e


def _damaged(path, error, member=None):
    where = f" (member {member!r})" if member else ""
    return CheckpointError(f"load: {path!r} is not a readable checkpoint{where} (truncated or corrupted .npz: "
                           f"{type(error).__name__}: {error})")


def _archive_infos(archive, path):
    infos = archive.infolist()
    names = [info.filename for info in infos]
    strays = [n for n in names if not n.endswith(".npy")]
    if strays or len(set(names)) != len(names):
        problem = f"members that are not .npy arrays {strays[:5]}" if strays else "repeated member names"
        raise CheckpointError(f"load: {path!r} is not a tinygrad_rnn checkpoint (a zip archive with {problem})")
    return infos


def _read_header(archive, info, path, name):
    try:
        with archive.open(info) as f:  # decompresses only the few bytes of the header
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} (save() writes 1.0)")
            offset = f.tell()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError,
            SyntaxError, TypeError) as e:
        raise _damaged(path, e, name) from e
    if dtype.kind not in "fU" or dtype.fields is not None:
        what = "complex" if dtype.kind == "c" else "not a real floating-point array"
        raise CheckpointError(f"load: {path!r} member {name!r} has dtype {dtype} ({what}): a tinygrad_rnn "
                              "checkpoint holds real float weights")
    declared = offset + math.prod(shape) * dtype.itemsize  # Python ints: a crafted shape cannot overflow
    if declared != info.file_size:
        raise _damaged(path, ValueError(f"its header declares {shape} {dtype} ({declared} bytes) but the "
                                        f"archive holds {info.file_size} bytes"), name)
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_COMPRESSION_RATIO * info.compress_size + (1 << 20):
        raise CheckpointError(f"load: {path!r} member {name!r} would expand from {info.compress_size} to "
                              f"{info.file_size} bytes ({shape} {dtype}): refused as a zip bomb, not a "
                              "tinygrad_rnn checkpoint")
    return shape, dtype


def _read_json(archive, info, path, name, shape, dtype):
    if shape != () or dtype.itemsize // 4 > MAX_JSON_CHARS:
        raise CheckpointError(f"load: {path!r} member {name!r} is a text array {shape} {dtype}, not the JSON "
                              "string save() writes")
    text = str(_read_member(archive, info, path, name))
    try:
        return json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"load: {path!r} has corrupted metadata in {name!r} ({e})") from e


def _read_member(archive, info, path, name):
    try:
        with archive.open(info) as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
            f.read()  # reach the member's end: zipfile checks its CRC there
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as e:
        raise _damaged(path, e, name) from e
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = ~np.isfinite(array)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CheckpointError(f"load: {path!r} member {name!r} has {int(bad.sum())} non-finite values "
                              f"(first at {first}: {array[first]}): a checkpoint's weights must be finite")
    return array
