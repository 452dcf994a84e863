"""Name -> builder registry that every CLI and API call goes through.

Each entry carries what ``python -m schedules --list`` prints: the paper, the closed form
and the constraints on (ranks, microbatches, chunks), checked here before a builder runs.

Most builders are pure functions of (ranks, microbatches, chunks). A few are built *for
costs* (zb-auto, zb-1p, zb-2p: the zero-bubble paper's automatic schedule, which times the
ranks as it orders them): they take a :class:`StageCosts` too, and a memory limit, so
``build(name, ranks, microbatches, costs=...)`` reaches them like any other. Without
costs they are built at unit costs, as ``python -m schedules`` does by default.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from typing import Callable

from .bounds import BYTES_PER_OP, check_fits, lowered_ops, number
from .ir import Schedule, ScheduleError, gc_paused

__all__ = ["register", "build", "names", "Builder", "Spec", "spec", "default_chunks", "accepts", "StageCosts"]

# A builder is a pure function of (ranks, microbatches, chunks) -> compute-only Schedule;
# one built for costs also takes (StageCosts, memory limit).
Builder = Callable[..., Schedule]


@dataclass(frozen=True)
class StageCosts:
    """What a schedule built for costs plans with: one stage's op times and one hop, in
    seconds (or any one unit), and the memory share W keeps. Unit costs by default.

    The small costs protocol of this package (it imports nothing of the simulator's): a
    caller with per-stage costs averages them once (``simulator.Costs.stage_costs``)."""

    t_f: float = 1.0
    """Forward of one stage on one microbatch."""
    t_i: float = 1.0
    """Backward for inputs (the gradient sent upstream)."""
    t_w: float = 1.0
    """Backward for weights."""
    t_comm: float = 0.0
    """Communication time of one hop between ranks."""
    w_memory_fraction: float = 0.5
    """Share of a stage's activations W still holds after I (the simulator's memory model)."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            positive = item.name in ("t_f", "t_i", "t_w")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (positive and value == 0):
                raise ScheduleError(f"{item.name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                    f"got {value!r}")
        if self.w_memory_fraction > 1:
            raise ScheduleError(f"w_memory_fraction must be within [0, 1], got {self.w_memory_fraction!r}")


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
    costed: bool = False
    """Built for costs: the builder takes a :class:`StageCosts` and a memory limit."""
    memory_limit: Callable[[int], float] | None = None
    """For p ranks, the cap on stage-microbatch activations a rank holds that the builder
    keeps to (None: not built under a cap); the default where the caller may give one."""
    limit_given: bool = False
    """Whether a caller may give the cap (zb-auto's ``memory_limit``); else the name fixes it."""


_SPECS: dict[str, Spec] = {}


def _first_line(builder: Builder) -> str:
    """The first line of the builder's module docstring: its paper."""
    doc = sys.modules[builder.__module__].__doc__ or ""
    return doc.strip().split("\n")[0]


def register(name: str, chunks_ok: Callable[[int], bool] = _one_chunk, rule: str = "chunks must be 1", *,
             microbatches_ok: Callable[[int, int], bool] = _any_m, microbatch_rule: str = "",
             default: int | None = None, summary: str = "", costed: bool = False,
             memory_limit: Callable[[int], float] | None = None, limit_given: bool = False):
    """Decorator: make ``builder`` reachable as ``build(name, ...)``."""

    def wrap(builder: Builder) -> Builder:
        chunks = default if default is not None else next(v for v in range(1, 9) if chunks_ok(v))
        _SPECS[name] = Spec(name, builder, chunks_ok, rule, microbatches_ok, microbatch_rule, chunks,
                            summary or _first_line(builder), costed, memory_limit, limit_given)
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


def build(name: str, ranks: int, microbatches: int, chunks: int | None = None, *, costs: StageCosts | None = None,
          memory_limit: float | None = None, bytes_per_op: int = BYTES_PER_OP) -> Schedule:
    """Build the named schedule; arguments are checked before any work is done: the cheap
    rules first, then whether this machine holds the lowered schedule at ``bytes_per_op``
    (default: what a validation keeps; see :mod:`schedules.bounds`).

    ``costs``: what a schedule built for costs plans with (default: unit costs); the other
    schedules do not read them. ``memory_limit``: the cap, where the schedule lets the
    caller give one (zb-auto; default :attr:`Spec.memory_limit`), else refused."""
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
    if memory_limit is not None and not entry.limit_given:
        raise ScheduleError(f"{name} takes no memory_limit" + (" (its name fixes it)" if entry.costed else ""))
    check_fits(f"{name} with ranks={number(ranks)}, microbatches={number(microbatches)}, chunks={number(chunks)}",
               lowered_ops(ranks * chunks, microbatches), bytes_per_op)
    with gc_paused():
        if not entry.costed:
            return entry.builder(ranks, microbatches, chunks)
        limit = entry.memory_limit(ranks) if memory_limit is None else memory_limit
        return entry.builder(ranks, microbatches, chunks, StageCosts() if costs is None else costs, limit)
