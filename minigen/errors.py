"""minigen's own errors: each names what was wrong and what was expected."""


class MinigenError(Exception):
    """Base class: everything minigen raises on bad input."""


class ShapeError(MinigenError, ValueError):
    """An op got shapes it cannot work with (the message names the op and the shapes)."""


class DTypeError(MinigenError, TypeError):
    """An op got a dtype it cannot handle."""


class DataError(MinigenError):
    """A data file or folder is missing, truncated or corrupt (the message names the file)."""


class CheckpointError(MinigenError):
    """A checkpoint is missing, truncated, or from an incompatible version."""


class ConfigError(MinigenError, ValueError):
    """A hyper-parameter has the wrong type, is out of range, unknown, or cannot work with another one."""


class RunFileError(MinigenError):
    """A file minigen wrote and reads back (a run's config.json, metrics.jsonl, summary.json, a sweep's
    sweep.json ...) is torn, not a regular file, or holds the wrong kind of value (the message names the
    file, the field and what was expected)."""
