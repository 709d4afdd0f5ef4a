"""Checks the subcommands run on their arguments before any work: argparse types for numeric ranges (the
error names the flag, e.g. "argument --seed: expected an integer ≥ 0, got -1"), the memory a run needs
against the memory this machine has, and input text files that are regular files of a sane size."""
import argparse
import math
import os

from .errors import UsageError

# Beyond this a text is no corpus this engine can learn in reasonable time; it also bounds what is read
# whole and encoded (a Python list, then int64 ids: ≥ 16 bytes per character).
MAX_TEXT_BYTES = 64 << 20


MAX_SHOWN_CHARS = 40  # a value longer than this is shortened in a message (the message stays one short line)


def shown(value, quote=True):
    """A flag's value as an error message quotes it: repr'd (quote) or as given, and cut to its start and
    length when long — a 5,000-digit --hidden is not repeated whole."""
    text = str(value)
    if len(text) > MAX_SHOWN_CHARS:
        return f"{text[:MAX_SHOWN_CHARS]!r}… ({len(text):,} characters)"
    return repr(text) if quote else text


def _integer(text):
    """Any integer, or argparse's error naming the text (the ranged types below build on it)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shown(text)}") from None


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None


def int_at_least(lower):
    """An argparse type: an integer ≥ lower."""
    def parse(text):
        value = _integer(text)
        if value < lower:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {lower}, got {shown(quote=False, value=value)}")
        return value
    parse.__name__ = f"integer ≥ {lower}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_finite(text):
    """An argparse type: a finite number > 0 (a learning rate, a temperature's upper side)."""
    value = _number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {shown(quote=False, value=text)}")
    return value


def non_negative_finite(text):
    """An argparse type: a finite number ≥ 0 (nan fails too: every comparison with nan is False)."""
    value = _number(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {shown(quote=False, value=text)}")
    return value


# --- memory -------------------------------------------------------------------------------------------

def available_memory():
    """Bytes this process may still allocate: MemAvailable (Linux), capped by the address-space limit
    (ulimit -v) and a cgroup v2 limit when there are any; the physical memory elsewhere."""
    limits = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f_max, open("/sys/fs/cgroup/memory.current") as f_current:
            ceiling = f_max.read().strip()
            if ceiling != "max":
                limits.append(int(ceiling) - int(f_current.read()))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return math.inf
    return max(0, min(limits))


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} EB"


def rnn_training_bytes(n_in, hidden, n_out, gates, steps, batch, itemsize=4):
    """Peak memory of training a recurrent model (cell with `gates` gate blocks of width `hidden`) on
    `steps` × `batch` positions per update: 5 copies of the parameters (weights, gradients, Adam's two
    buffers, clipping's scaled gradients) plus the unrolled graph, ≈ n_in + n_out + 10·gates·hidden floats
    per position. Measured with tracemalloc on the char LM and the tasks (d 64-512, rnn/gru/lstm): the
    peaks were 0.65-1.05 times this estimate."""
    params = gates * (n_in * hidden + hidden * hidden + 2 * hidden) + hidden * n_out + n_out
    return itemsize * (5 * params + steps * batch * (n_in + n_out + 10 * gates * hidden))


def check_fits_in_memory(what, needed, advice):
    """UsageError when `needed` bytes exceed what the machine has: refused before the work starts."""
    free = available_memory()
    if needed > free:
        raise UsageError(f"{what} needs about {human_bytes(needed)} of memory, more than the "
                         f"{human_bytes(free)} available; {advice}")


# --- input files --------------------------------------------------------------------------------------

def check_text_file(flag, path):
    """A --text file must be a regular file of at most MAX_TEXT_BYTES (a device such as /dev/zero or a
    pipe never ends, and a huge file would be read whole before training)."""
    if path is None:
        return
    try:
        info = os.stat(path)
    except OSError as e:
        raise UsageError(f"{flag} {path}: {e.strerror}") from None
    import stat
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{flag} {path}: is a directory, not a text file")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{flag} {path}: not a regular file (a device or a pipe); save the text to a file")
    if info.st_size > MAX_TEXT_BYTES:
        raise UsageError(f"{flag} {path}: {human_bytes(info.st_size)}, more than the "
                         f"{human_bytes(MAX_TEXT_BYTES)} a text may have (it is read whole and encoded as int64 ids)")
