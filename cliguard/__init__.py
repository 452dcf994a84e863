"""What every pipebubble command line does at its edges, written once.

Two rules from the README's contract live here:

* **Outputs are claimed before any work starts.** :func:`claim_file` and
  :func:`claim_dir` check that a path can be written (by writing a probe, which is the
  only test that also holds for root, read-only mounts and ``/proc``), and refuse to
  replace what is there unless ``--force`` is given. A default output (one the user did
  not name) goes into a new folder of its own, :func:`fresh_dir`, with a ``latest`` link
  beside it, so nothing is ever overwritten without ``--force``.
* **One error path.** :func:`run_cli` turns :class:`UsageError` (and the errors a
  user's own file or flag can cause: ``OSError``, ``KeyError``, ``OverflowError``,
  ``MemoryError``) into one line on stderr and an exit code: 2 for bad input, 1 for a
  failure while running, 130 for Ctrl-C.

This package imports nothing of ours, so every other package may use it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["UsageError", "claim_file", "claim_dir", "fresh_dir", "run_cli", "first_line", "EXIT_USAGE",
           "EXIT_FAILURE", "EXIT_INTERRUPT"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPT = 130


class UsageError(ValueError):
    """Bad input: reported in one line, exit code 2, before any work starts."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _probe_dir(folder: Path, flag: str) -> None:
    """Write and remove a probe file in ``folder``: the only writability test that holds for root."""
    probe = folder / f".pipebubble-probe-{os.getpid()}"
    try:
        with open(probe, "x"):
            pass
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{flag} {str(folder)!r}: cannot write there ({err.strerror or err})") from None


def claim_file(path: str | os.PathLike, *, force: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written as a new file.

    The folder above it is created if missing. An existing file is refused unless
    ``force``; a folder in its place is always refused.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise UsageError(f"{flag} {str(target)!r} exists; pass --force to replace it")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {str(target)!r}: cannot create {str(parent)!r} ({err.strerror or err})") from None
    if target.exists():  # forced: it must be writable in place
        try:
            with open(target, "a"):
                pass
        except OSError as err:
            raise UsageError(f"{flag} {str(target)!r}: cannot write it ({err.strerror or err})") from None
    else:
        _probe_dir(parent, flag)
    return target


def claim_dir(path: str | os.PathLike, *, force: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can take a run's files.

    A missing folder is created; an existing one must be empty unless ``force`` (then
    its files are replaced one by one, and files this run does not write stay).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{flag} {str(target)!r} is a file, not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UsageError(f"{flag} {str(target)!r} exists and is not empty; pass --force to write into it")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {str(target)!r}: cannot create it ({err.strerror or err})") from None
    _probe_dir(target, flag)
    return target


def fresh_dir(parent: str | os.PathLike, stem: str, *, flag: str = "--out") -> Path:
    """A new folder ``parent/stem-YYYYmmdd-HHMMSS[-n]`` and a link ``parent/stem`` to it.

    For outputs the user did not name: each run keeps its own folder, and
    ``parent/stem`` always leads to the newest one.
    """
    base = Path(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = base / (f"{stem}-{stamp}" if n == 0 else f"{stem}-{stamp}-{n}")
        if not folder.exists():
            break
    claim_dir(folder, flag=flag)
    link = base / stem
    try:
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(folder.name, target_is_directory=True)
    except OSError:
        pass  # the link is a convenience: a file system without links still gets the run
    return folder


def run_cli(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``body(argv)`` and turn the errors a user can cause into one line.

    Exit codes: what ``body`` returns; 2 for :class:`UsageError` and any other
    ``ValueError`` (bad input); 1 for ``OSError``, ``MemoryError`` and ``OverflowError``
    raised while running; 130 for Ctrl-C. An exception of any other type is a bug, or a
    user's own code raising: its traceback is kept.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except ValueError as err:  # UsageError, ScheduleError and the like
        print(f"{prog}: error: {first_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, MemoryError, OverflowError) as err:
        print(f"{prog}: error: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return EXIT_FAILURE
