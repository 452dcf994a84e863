"""What every pipebubble command line does at its edges, written once.

Three rules from the README's contract live here:

* **Outputs are claimed before any work starts.** :func:`claim_file` and
  :func:`claim_dir` check that a path can be written (by writing a probe, which is the
  only test that also holds for root, read-only mounts and ``/proc``), and refuse to
  replace what is there unless ``--force`` is given. A default output (one the user did
  not name) goes into a new folder of its own, :func:`fresh_dir`, with a ``latest`` link
  beside it, so nothing is ever overwritten without ``--force``. :func:`save_all` writes
  the outputs at the end, each through a temporary file renamed into place (a failed
  write leaves no half file and keeps what was there); one that still fails goes to a
  fresh temporary folder, the others are written anyway, and the error says where each went.
* **Sizes are checked against the machine.** :func:`memory_available` is what this
  process may still allocate, :func:`usable_cores` the cores it may run on; the bounds
  themselves (bytes per op, per trace row, ...) are measured where the ops are made.
* **One error path.** :func:`run_cli` turns :class:`UsageError` (and the errors a
  user's own file or flag can cause: ``OSError``, ``OverflowError``, ``MemoryError``)
  into one line on stderr and an exit code: 2 for bad input, 1 for a failure while
  running, 130 for Ctrl-C, 141 (silently) when stdout is closed early (``| head``). A
  loader turns a ``KeyError`` of a user's file into a ``ValueError`` naming the file and
  the field, since a ``KeyError`` anywhere else is a bug and keeps its traceback. :class:`Parser` is argparse reporting through the same path, and it
  refuses a flag given twice (``--ranks 4 --ranks 8``: which one was meant?).

This package imports nothing of ours, so every other package may use it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import stat
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["UsageError", "claim_file", "claim_dir", "fresh_dir", "run_cli", "first_line", "Parser", "save_all",
           "SaveError", "memory_available", "usable_cores", "too_large", "read_input", "short_number", "launch", "EXIT_USAGE", "EXIT_FAILURE",
           "EXIT_INTERRUPT"]

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


# ---- writing at the end -------------------------------------------------------------------

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


# ---- the machine --------------------------------------------------------------------------

def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name == key:
                    return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _address_room() -> int | None:
    """Bytes of address space left under ``ulimit -v`` (RLIMIT_AS), None without one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = _status("VmSize")
    return max(0, soft - (size or 0))


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_available() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable (memory that can be
    had without swapping), less where a cgroup limit or ``ulimit -v`` leaves less."""
    available = _meminfo("MemAvailable")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            available = 1 << 62  # nothing to go by: sizes are then bounded by allocation failures
    return min(x for x in (available, _cgroup_room(), _address_room()) if x is not None)


def short_number(n: int) -> str:
    """An integer in at most a dozen characters, whatever its size (a user may type 10**40)."""
    if n < 10 ** 12:
        return str(n)
    return f"{n:.2e}" if n < 10 ** 300 else f"10^{len(str(n)) - 1}"


def _gib(n: int) -> str:
    return f"{short_number(n // 2 ** 30) if n >= 2 ** 40 else f'{n / 2 ** 30:.1f}'} GiB"


def too_large(what: str, count: int, bytes_each: int, *, unit: str = "op", measured_by: str) -> str | None:
    """None if ``count`` items of ``bytes_each`` fit in :func:`memory_available`; else the
    one-line refusal, naming the size, the bound and the command that measured the figure."""
    need, have = count * bytes_each, memory_available()
    if need <= have:
        return None
    return (f"{what}: too large for this machine: about {short_number(count)} {unit}s need {_gib(need)} at {bytes_each} "
            f"bytes a{'n' if unit[0] in 'aeiou' else ''} {unit} (measured: {measured_by}), and {_gib(have)} is "
            f"available, room for about {short_number(have // bytes_each)}")


def read_input(path: str | os.PathLike, what: str, bytes_per_byte: int, *, measured_by: str,
               kind: str | None = None) -> str:
    """The text of a user's input file, refused in one line (:class:`UsageError` naming
    ``what`` and the path) if it cannot be read, is not UTF-8 text, or holds more than this
    machine can parse at ``bytes_per_byte`` of memory per byte of it: a regular file by its
    size before it is read, a pipe or device by reading only that much. A pipe with no
    writer reads as empty instead of waiting for one. ``kind`` names what text that is not
    UTF-8 is not (default ``a {what}``)."""
    label = f"{what} {str(path)!r}"
    most = max(1, memory_available() // bytes_per_byte)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without a writer opens at once
    except OSError as err:
        raise UsageError(f"cannot read {label}: {_why(err)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"cannot read {label}: it is a folder")
        os.set_blocking(fd, True)
        if stat.S_ISREG(info.st_mode) and info.st_size > most:
            raise UsageError(too_large(label, info.st_size, bytes_per_byte, unit="byte", measured_by=measured_by))
        with os.fdopen(fd, encoding="utf-8", newline="", closefd=False) as handle:
            text = handle.read(most + 1)
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not {kind or 'a ' + what} (not UTF-8 text: {err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UsageError(f"cannot read {label}: {_why(err)}") from None
    finally:
        os.close(fd)
    if len(text) > most:
        raise UsageError(too_large(f"{label} (more than {most} characters)", len(text), bytes_per_byte, unit="byte",
                                   measured_by=measured_by))
    return text


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, less where a cgroup quota allows fewer."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpushort_number() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


# ---- the command line ---------------------------------------------------------------------

class _StoreOnce(argparse.Action):
    """argparse's plain ``store``, refusing a second occurrence of the same flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(parser, "given", None) if option_string is not None else None  # flags only
        if given is not None and self.dest in given:
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]!r}, then {values!r}); give it once")
        if given is not None:
            given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (one line through :func:`run_cli`),
    that refuses a value flag given twice, and that records in :attr:`given` the value
    flags the user wrote (``dest -> value``; not positionals, not ``store_true``), so that
    a command can refuse a flag another input overrides instead of ignoring it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.given: dict[str, object] = {}

    def parse_known_args(self, args=None, namespace=None):
        self.given = {}
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def run_cli(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None, *,
            name_errors: bool = True) -> int:
    """Run a command's ``body(argv)`` and turn the errors a user can cause into one line,
    ``{prog}: error: ...`` (``error: ...`` without ``name_errors``).

    Exit codes: what ``body`` returns; 2 for :class:`UsageError` and any other
    ``ValueError`` (bad input); 1 for ``OSError``, ``MemoryError`` and ``OverflowError``
    raised while running; 130 for Ctrl-C; 141, silently, when stdout was closed before
    the output was all written. An exception of any other type is a bug, or a user's own
    code raising: its traceback is kept.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = f"{prog}: error: " if name_errors else "error: "
    try:
        return body(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_PIPE
    except ValueError as err:  # UsageError, ScheduleError and the like
        print(f"{lead}{first_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, MemoryError, OverflowError) as err:
        print(f"{lead}{type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return EXIT_FAILURE


def _drop_stdout() -> None:
    """The reader went away: point stdout at /dev/null so the exit's flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def launch(prog: str, module: str) -> int:
    """What a ``__main__.py`` runs: import ``module`` and return its ``main()``. A Ctrl-C
    while the modules load (a second or more with torch or pandas) is one line and 130
    as well, not a traceback."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    return main()
