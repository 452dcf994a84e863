"""Name -> builder registry that every CLI and API call goes through."""

from __future__ import annotations

from typing import Callable

from .ir import Schedule, ScheduleError, gc_paused

__all__ = ["register", "build", "names", "Builder"]

# A builder is a pure function of (ranks, microbatches, chunks) -> compute-only Schedule.
Builder = Callable[[int, int, int], Schedule]

_BUILDERS: dict[str, Builder] = {}
_CHUNKS: dict[str, Callable[[int], bool]] = {}
_CHUNK_RULE: dict[str, str] = {}


def register(name: str, chunks_ok: Callable[[int], bool] = lambda v: v == 1, rule: str = "chunks must be 1"):
    """Decorator: make ``builder`` reachable as ``build(name, ...)``."""

    def wrap(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        _CHUNKS[name] = chunks_ok
        _CHUNK_RULE[name] = rule
        return builder

    return wrap


def names() -> list[str]:
    """Registered schedule names in registration order."""
    return list(_BUILDERS)


def default_chunks(name: str) -> int:
    """The smallest chunk count the named schedule accepts (2 for zbv, else 1)."""
    return next(v for v in range(1, 9) if _CHUNKS[name](v))


def build(name: str, ranks: int, microbatches: int, chunks: int | None = None) -> Schedule:
    """Build the named schedule; arguments are checked before any work is done."""
    if name not in _BUILDERS:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of: {', '.join(_BUILDERS)}")
    for label, value in (("ranks", ranks), ("microbatches", microbatches)):
        if not isinstance(value, int) or value < 1:
            raise ScheduleError(f"{label} must be a whole number >= 1, got {value!r}")
    if chunks is None:
        chunks = default_chunks(name)
    if not isinstance(chunks, int) or not _CHUNKS[name](chunks):
        raise ScheduleError(f"{name}: {_CHUNK_RULE[name]}, got chunks={chunks!r}")
    with gc_paused():
        return _BUILDERS[name](ranks, microbatches, chunks)
