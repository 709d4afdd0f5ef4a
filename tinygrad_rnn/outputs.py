"""Output files of the command line: every path is checked before any work (a run that fails afterwards
has written nothing), and files are written atomically — into a temporary file beside the target, then
os.replace, as nn/checkpoint.py writes checkpoints (same temporary names, same clean-up of what a killed
writer left). os.replace swaps a symlink given as the target for the new file; the file it pointed to is
never written through it."""
import os
import tempfile

from .errors import UsageError
from .nn import checkpoint as _checkpoint


def _nearest_existing(directory):
    """The deepest existing folder on the way to `directory` (which is created when the file is written)."""
    while not os.path.exists(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def _check_writable_folder(flag, path, folder):
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {path}: cannot create its folder: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write into {existing} (permission denied)")


def check_output_file(flag, path, suffixes):
    """UsageError unless `path` (given with `flag`) can be written as a file ending in one of `suffixes`
    (lower-case, without the dot, the usual ones first): not a folder, in a folder that exists or can be created,
    writable."""
    if path is None:
        return None
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name such as "
                         f"{os.path.join(path, 'x.' + suffixes[0])}")
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix not in suffixes:
        shown = ", ".join(f".{s}" for s in suffixes[:3]) + (f" (or {', '.join(suffixes[3:])})" if suffixes[3:] else "")
        raise UsageError(f"{flag} {path}: end it in {shown}; the suffix gives the format")
    _check_writable_folder(flag, path, os.path.dirname(os.path.abspath(path)))
    return path


def check_output_folder(flag, path):
    """UsageError unless `path` is a folder, or can be created as one, that can be written into."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    _check_writable_folder(flag, path, os.path.abspath(path))
    return path


def check_distinct(*flag_paths):
    """UsageError when two outputs, or an output and an input, are the same file (one would destroy the
    other). flag_paths: (flag, path) pairs; None paths are skipped."""
    seen = {}
    for flag, path in flag_paths:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise UsageError(f"{flag} {path} and {seen[key][0]} {seen[key][1]} are the same file")
        seen[key] = (flag, path)


def make_folder_for(path):
    """Create the folder `path` goes in (checked by check_output_file before the work); returns path."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    return path


def write_atomically(path, write):
    """Call write(binary file object) on a temporary file beside `path`, fsync, then os.replace it onto
    `path` (creating the folder first): readers see the old file or the complete new one, never a partial
    one. An existing target keeps its permission bits. Errors name `path`, never the temporary file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        make_folder_for(path)
        mode = _checkpoint._mode_for(path)
        _checkpoint.remove_stale_temp_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_checkpoint._temp_prefix(path)}{os.getpid()}.", dir=directory)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        message = f"cannot write {path!r}: {e.strerror or e}"
        raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_figure(fig, path, dpi=120):
    """Write a matplotlib Figure atomically, in the format its suffix names."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    return write_atomically(path, lambda f: fig.savefig(f, format=suffix, dpi=dpi))
