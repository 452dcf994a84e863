"""What this machine can hold and run: memory, cores, and the inputs sized against them."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

from .errors import UsageError, _why


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
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)
