"""The one error path's words: exit codes, the errors a user can cause, one line of each."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPT = 130
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a pipeline cut short


class UsageError(ValueError):
    """Bad input: reported in one line, exit code 2, before any work starts."""


class SaveError(OSError):
    """An output could not be written where asked; the message says where it went instead."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    if not text:
        return "out of memory" if isinstance(err, MemoryError) else type(err).__name__
    return text.splitlines()[0]


def _why(err: OSError) -> str:
    return err.strerror or str(err)
