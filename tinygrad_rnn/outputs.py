"""Output files, written so that a failing run loses nothing: every path is checked before any work (a run
that fails afterwards has written nothing), and every file — a figure, a drawing, a checkpoint — is written
atomically: into a temporary file beside the target, fsync, then os.replace. Readers see the old file or the
complete new one, never a partial one; os.replace swaps a symlink given as the target for the new file, so
the file it pointed to is never written through it. The temporary file is named after the target and the
writer's pid (`.tmp-<name>.<pid>.<random>`), so the next write of that path removes what a killed writer
left behind, and a loader can recognise one (is_temp_file) and refuse to read it."""
import contextlib
import os
import re
import stat
import tempfile
import time

from .errors import UsageError

STALE_TEMP_SECONDS = 24 * 3600  # a temp file this old is stale even if its pid is alive again (pid reuse)
_TEMP_TAIL = re.compile(r"(\d+)\.[a-z0-9_]{8}")  # <pid>.<mkstemp's 8 random characters>
_TEMP_NAME = re.compile(r"\.tmp-.+\.\d+\.[a-z0-9_]{8}")


# --- checks before any work ---------------------------------------------------------------------------

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
    (lower-case, without the dot, the usual ones first; None: any name, when a flag such as --format gives the
    format): not a folder, in a folder that exists or can be created, writable."""
    if path is None:
        return None
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; give a file name such as "
                         f"{os.path.join(path, 'x.' + suffixes[0])}")
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffixes is not None and suffix not in suffixes:
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


# --- atomic writes ----------------------------------------------------------------------------------

def _temp_prefix(path):
    return f".tmp-{os.path.basename(path)}."


def is_temp_file(path):
    """True for a name atomic_path gives its unfinished temporary files (never a file to read)."""
    return _TEMP_NAME.fullmatch(os.path.basename(os.fspath(path))) is not None


def _mode_for(path):
    try:
        existing = os.stat(path)
    except OSError:
        return 0o666 & ~_umask()  # mkstemp makes 0600; a new file gets the usual permissions
    if stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(f"{path!r} is a directory, not a file")
    return stat.S_IMODE(existing.st_mode)


def remove_stale_temp_files(path):
    """Remove the temporary files that killed writes of `path` left (their writer's pid is gone, or they
    are older than a day); the files of a write still running elsewhere are kept. Returns the names removed."""
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
            except FileNotFoundError:  # another writer removed it first
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


@contextlib.contextmanager
def atomic_path(path, what="", create_folder=True):
    """Yield the path of a new temporary file beside `path` for the block to write; when the block ends
    without an error, fsync it and os.replace it onto `path`; on any error remove it and keep the old file.
    An existing target keeps its permission bits, a new one gets 0666 minus the umask; the temporary files
    that killed writers of `path` left are removed first. OSErrors name `path` (after `what`, e.g. "the
    checkpoint "), never the temporary file. For writers that want a file name (Graphviz, matplotlib)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _mode_for(path)  # a folder given as the target is an IsADirectoryError naming it
    tmp = None
    try:
        if create_folder:
            make_folder_for(path)
        remove_stale_temp_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", dir=directory)
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the rename makes it the target
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:  # the temporary file's name means nothing to the user: report the target
        error = OSError(f"cannot write {what}{path!r}: {e.strerror or e}")
        error.errno = e.errno  # kept for callers, but set apart so the message does not start "[Errno 27]"
        raise error from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_atomically(path, write, what="", create_folder=True):
    """Call write(binary file object) on a temporary file beside `path`, then replace `path` with it, as
    atomic_path does (same permissions, clean-up and error messages); returns path."""
    with atomic_path(path, what, create_folder) as tmp, open(tmp, "wb") as f:
        write(f)
    return path


def save_figure(fig, path, dpi=120):
    """Write a matplotlib Figure atomically, in the format its suffix names."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    return write_atomically(path, lambda f: fig.savefig(f, format=suffix, dpi=dpi))
