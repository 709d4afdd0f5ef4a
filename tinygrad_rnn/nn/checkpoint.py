""".npz checkpoints that are written atomically and read defensively.

Writing: np.savez into a temporary file beside the target, fsync, os.replace — a crash leaves the old file
(or none), never a truncated one. The temporary file is named after the target and the writer's pid
(`.tmp-<name>.<pid>.<random>`), so the next save of that path removes what a killed writer left behind.

Reading: every member's .npy header (name, shape, dtype) is read and checked before any array data is
decompressed — a small crafted file cannot make load allocate gigabytes — then the arrays are read
(each member's CRC is checked) and must be finite real floats.
"""
import json
import math
import os
import re
import stat
import tempfile
import time
import zipfile

import numpy as np

METADATA_KEY = "__metadata__"  # a JSON string stored beside the weights (vocabulary, sizes, ...)
OPTIMIZER_KEY = "__optimizer__"  # the optimizer's JSON part; its arrays are "__optimizer__.<index>.<key>"
SCHEDULER_KEY = "__scheduler__"
MAX_JSON_CHARS = 1 << 22        # a JSON member larger than this is not one save() wrote
# a deflated member that expands more than this (beyond a 1 MiB allowance) is a zip bomb: save() never
# compresses, and float weights compressed by np.savez_compressed shrink by a few percent only
MAX_COMPRESSION_RATIO = 64
STALE_TEMP_SECONDS = 24 * 3600  # a temp file this old is stale even if its pid is alive again (pid reuse)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip's end record
_NPY_MAGIC = b"\x93NUMPY"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupted, crafted, or not an .npz of arrays."""


# --- writing ------------------------------------------------------------------------------------------

def _temp_prefix(path):
    return f".tmp-{os.path.basename(path)}."


_TEMP_TAIL = re.compile(r"(\d+)\.[a-z0-9_]{8}")  # <pid>.<mkstemp's 8 random characters>
_TEMP_NAME = re.compile(r"\.tmp-.+\.\d+\.[a-z0-9_]{8}")


def is_temp_file(path):
    """True for a name save_npz gives its unfinished temporary files (never a checkpoint to read)."""
    return _TEMP_NAME.fullmatch(os.path.basename(os.fspath(path))) is not None


def save_npz(path, arrays):
    """np.savez to a temporary file in the destination's directory, then os.replace: a crash mid-save
    leaves the old checkpoint (or none), never a truncated one. An existing target keeps its permission
    bits; a new one gets 0666 minus the umask. Errors name `path`, never the temporary file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} of {path!r} does not exist")
    mode = _mode_for(path)
    remove_stale_temp_files(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", dir=directory)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:  # the temp file's name means nothing to the user: report the target
        message = f"save: cannot write the checkpoint {path!r}: {e.strerror or e}"
        raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def json_member(value):
    """A JSON-serialisable value as the 0-d text array a checkpoint stores it in."""
    return np.array(json.dumps(value))


def _mode_for(path):
    try:
        existing = os.stat(path)
    except OSError:
        return 0o666 & ~_umask()  # mkstemp makes 0600; a new checkpoint gets the usual permissions
    if stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(f"save: {path!r} is a directory, not a checkpoint file")
    return stat.S_IMODE(existing.st_mode)


def remove_stale_temp_files(path):
    """Remove the temporary files that killed saves of `path` left (their writer's pid is gone, or they
    are older than a day); the files of a save still running elsewhere are kept. Returns the names removed."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    prefix, removed = _temp_prefix(os.fspath(path)), []
    with os.scandir(directory) as entries:
        for entry in entries:
            tail = _TEMP_TAIL.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
            if tail is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                old = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
                if old or not _process_alive(int(tail.group(1))):
                    os.remove(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:  # another save removed it first
                pass
    return removed


def _process_alive(pid):
    if pid == os.getpid():
        return True  # one of our own threads is writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


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
        """Raise CheckpointError unless every member named in `expected` {name: shape} is there with that
        shape — for building a model from the metadata only once its sizes agree with the arrays (a
        metadata saying hidden=10**6 must not allocate a 10⁶×10⁶ matrix before the mismatch is found)."""
        problems = [f"no member {name!r}" if name not in self.members else
                    f"{name!r} is {self.members[name][0]}, not {tuple(shape)}"
                    for name, shape in expected.items()
                    if name not in self.members or self.members[name][0] != tuple(shape)]
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
