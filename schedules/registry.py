"""Name -> builder registry that every CLI and API call goes through.

Each entry carries what ``python -m schedules --list`` prints: the paper, the closed form
and the constraints on (ranks, microbatches, chunks), checked here before a builder runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from .bounds import BYTES_PER_OP, check_fits, lowered_ops, number
from .ir import Schedule, ScheduleError, gc_paused

__all__ = ["register", "build", "names", "Builder", "Spec", "spec", "default_chunks", "accepts"]

# A builder is a pure function of (ranks, microbatches, chunks) -> compute-only Schedule.
Builder = Callable[[int, int, int], Schedule]


def _one_chunk(v: int) -> bool:
    return v == 1


def _any_m(p: int, m: int) -> bool:
    return True


@dataclass(frozen=True)
class Spec:
    """One registered schedule."""

    name: str
    builder: Builder
    chunks_ok: Callable[[int], bool]
    """Which chunk counts (model stages per rank) the builder takes."""
    chunk_rule: str
    """The chunk rule in words, for the error message and --list."""
    microbatches_ok: Callable[[int, int], bool]
    """Which (ranks, microbatches) the builder takes."""
    microbatch_rule: str
    """That rule in words ("" when every m >= 1 works)."""
    default_chunks: int
    summary: str
    """Paper or origin and the closed form, one line, for --list."""


_SPECS: dict[str, Spec] = {}


def _first_line(builder: Builder) -> str:
    """The first line of the builder's module docstring: its paper."""
    doc = sys.modules[builder.__module__].__doc__ or ""
    return doc.strip().split("\n")[0]


def register(name: str, chunks_ok: Callable[[int], bool] = _one_chunk, rule: str = "chunks must be 1", *,
             microbatches_ok: Callable[[int, int], bool] = _any_m, microbatch_rule: str = "",
             default: int | None = None, summary: str = ""):
    """Decorator: make ``builder`` reachable as ``build(name, ...)``."""

    def wrap(builder: Builder) -> Builder:
        chunks = default if default is not None else next(v for v in range(1, 9) if chunks_ok(v))
        _SPECS[name] = Spec(name, builder, chunks_ok, rule, microbatches_ok, microbatch_rule, chunks,
                            summary or _first_line(builder))
        return builder

    return wrap


def names() -> list[str]:
    """Registered schedule names in registration order."""
    return list(_SPECS)


def spec(name: str) -> Spec:
    if name not in _SPECS:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of: {', '.join(_SPECS)}")
    return _SPECS[name]


def default_chunks(name: str) -> int:
    """The chunk count the named schedule uses when none is given (2 for V and interleaved)."""
    return spec(name).default_chunks


def accepts(name: str, ranks: int, microbatches: int, chunks: int | None = None) -> bool:
    """Whether ``build`` takes these arguments (for sweeps and property tests)."""
    entry = spec(name)
    chunks = entry.default_chunks if chunks is None else chunks
    return entry.chunks_ok(chunks) and entry.microbatches_ok(ranks, microbatches)


def build(name: str, ranks: int, microbatches: int, chunks: int | None = None, *,
          bytes_per_op: int = BYTES_PER_OP) -> Schedule:
    """Build the named schedule; arguments are checked before any work is done: the cheap
    rules first, then whether this machine holds the lowered schedule at ``bytes_per_op``
    (default: what a validation keeps; see :mod:`schedules.bounds`)."""
    entry = spec(name)
    for label, value in (("ranks", ranks), ("microbatches", microbatches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScheduleError(f"{label} must be a whole number >= 1, got {value!r}")
    if chunks is None:
        chunks = entry.default_chunks
    if isinstance(chunks, bool) or not isinstance(chunks, int) or not entry.chunks_ok(chunks):
        raise ScheduleError(f"{name}: {entry.chunk_rule}, got chunks={chunks!r}")
    if not entry.microbatches_ok(ranks, microbatches):
        raise ScheduleError(f"{name}: {entry.microbatch_rule}, got ranks={ranks}, microbatches={microbatches}")
    check_fits(f"{name} with ranks={number(ranks)}, microbatches={number(microbatches)}, chunks={number(chunks)}",
               lowered_ops(ranks * chunks, microbatches), bytes_per_op)
    with gc_paused():
        return entry.builder(ranks, microbatches, chunks)
