"""The engine's errors: each says which op, which shapes and (inside an unrolled graph) which step."""


class ShapeError(ValueError):
    """Operands whose shapes do not fit the op (named with their shapes and the time step)."""


class GraphFreedError(RuntimeError):
    """Backward through a graph whose saved values were freed by an earlier backward."""


class InplaceError(RuntimeError):
    """A tensor saved for backward was modified in place afterwards, or an in-place update would
    silently cut the recorded graph."""


class AnomalyError(RuntimeError):
    """Under detect_anomaly(): a forward value or a backward gradient became NaN or Inf."""


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2, no traceback."""
