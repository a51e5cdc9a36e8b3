"""Errors a user can act on. The CLI prints them as one line and exits non-zero, no traceback."""


class MdrecError(Exception):
    """Base class: the message names what is wrong (file, column, key or value)."""

    exit_code = 2


class ConfigError(MdrecError):
    """A config file, key or value is wrong."""


class DataError(MdrecError):
    """An input table or file is missing, unreadable, empty or malformed."""


class StorageError(MdrecError):
    """A run directory or remote location cannot be read or written."""


class ClusterError(MdrecError):
    """A Ray cluster cannot be reached, a job on it cannot be found, or a job cannot be sent safely."""


def one_line(e: BaseException) -> str:
    """An error's message on one line (whitespace folded), or its type when it has none."""
    return " ".join(str(e).split()) or type(e).__name__
