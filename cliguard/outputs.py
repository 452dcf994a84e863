"""Outputs claimed before any work starts, and written at the end without losing any."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import UsageError, SaveError, _why


def _probe_dir(folder: Path, flag: str, named: Path) -> None:
    """Write and remove a probe file in ``folder``: the only writability test that holds
    for root. Errors name ``named``, the path the user gave."""
    probe = folder / f".pipebubble-probe-{os.getpid()}"
    try:
        with open(probe, "x"):
            pass
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{flag} {str(named)!r}: cannot write there ({_why(err)})") from None


def claim_file(path: str | os.PathLike, *, force: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written as a new file.

    The folder above it is created if missing. An existing file is refused unless
    ``force``; a folder in its place is always refused.
    """
    target = Path(path)
    if str(path) == "":
        raise UsageError(f"{flag} is empty; give a file name")
    if target.is_dir():
        raise UsageError(f"{flag} {str(target)!r} is a folder; give a file name")
    if target.exists() and not force:
        raise UsageError(f"{flag} {str(target)!r} exists; pass --force to replace it")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {str(target)!r}: cannot write there: cannot create folder {str(parent)!r} "
                         f"({_why(err)})") from None
    if target.exists():  # forced: it must be writable in place
        try:
            with open(target, "a"):
                pass
        except OSError as err:
            raise UsageError(f"{flag} {str(target)!r}: cannot write it ({_why(err)})") from None
    _probe_dir(parent, flag, target)  # the temporary file save_all renames into place goes here
    return target


def claim_dir(path: str | os.PathLike, *, force: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can take a run's files.

    A missing folder is created; an existing one must be empty unless ``force`` (then
    its files are replaced one by one, and files this run does not write stay).
    """
    target = Path(path)
    if str(path) == "":
        raise UsageError(f"{flag} is empty; give a folder name")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{flag} {str(target)!r} is a file, not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UsageError(f"{flag} {str(target)!r} exists and is not empty; pass --force to write into it")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {str(target)!r}: cannot create it ({_why(err)})") from None
    _probe_dir(target, flag, target)
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


Writer = Callable[[Path], object]  # writes the output to the path it is given


def _write_via_temp(path: Path, write: Writer) -> None:
    """``write`` into a temporary file beside ``path`` (same name at the end, so a writer
    that reads the format off the suffix still does), then rename it over ``path``."""
    temp = path.parent / f".part-{os.getpid()}-{path.name}"
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_all(outputs: Sequence[tuple[str, Path, Writer]]) -> list[Path]:
    """Write each ``(flag, path, write)`` of a run that is done; return the paths written.

    Every output is attempted even if an earlier one fails. One that cannot be written
    where asked (disk full, folder removed meanwhile) is written into a fresh temporary
    folder instead; then :class:`SaveError` names, in one line, each that failed, why,
    and where it is now (or that it is lost). ``MemoryError`` and ``KeyboardInterrupt``
    are not caught.
    """
    import tempfile  # here: a command that writes nothing need not load it

    written: list[Path] = []
    failed: list[str] = []
    rescue: Path | None = None
    for flag, path, write in outputs:
        try:
            _write_via_temp(Path(path), write)
            written.append(Path(path))
            continue
        except OSError as err:
            why = _why(err)
        try:
            rescue = rescue or Path(tempfile.mkdtemp(prefix="pipebubble-saved-"))
            _write_via_temp(rescue / Path(path).name, write)
            failed.append(f"{flag} {str(path)!r} ({why}): saved instead to {str(rescue / Path(path).name)!r}")
        except OSError as again:
            failed.append(f"{flag} {str(path)!r} ({why}): not saved ({_why(again)} in the temporary folder too)")
    if failed:
        kept = f"; written: {', '.join(map(str, written))}" if written else ""
        raise SaveError(f"could not write {'; '.join(failed)}{kept}")
    return written


