"""The schedules the search builds: where their stages sit, their op order's memory, their
bubble at uniform costs, and how a large microbatch count is reached from small ones.

Every registered schedule is built once per (schedule, pp, m, chunks) and kept with its
:class:`planner.memory.OrderPeaks`; the ones built for costs (ZB-1p, ZB-2p, zb-auto) once
per layout's stage costs, rounded (:func:`built_for`).

Schedules built by a search under a memory limit (the ones built for costs, and V-Half
and V-Min, whose builder runs the same heuristic: seconds for p = 32; the registry's
``Spec.memory_limit``) are not built in the pre-filter: their activations there are their
limit's, which the search never exceeds, and their bubble a closed form's (:func:`proxy`);
the simulation builds them for real.

Large m: a schedule of more than ``EXACT_OPS`` compute ops (3 m x stages) is built at
three smaller microbatch counts of the same structure as m (multiples of the same
microbatches per round g = m / (m // pp), or of pp plus the same remainder), 2g, 3g and
4g, and its activation peaks continued affinely to m: past the fill the peak either stays
(1F1B and its kin) or grows by the same bytes per microbatch (GPipe, looped BFS). Where the
third count disagrees with the line through the first two the schedule is built at m
after all, so the memory stays exact; ``tests/test_planner_search.py`` checks it for every
schedule. A simulation of such a layout runs at the first two counts and continues the
step time and busy time the same way (past the fill every further microbatch adds the
same work), so the work per layout stays bounded however large m is.
"""

from __future__ import annotations

import math
from functools import lru_cache

from dataclasses import fields, replace

import schedules
from schedules import COMPUTE_KINDS, OpKind, StageCosts

from .memory import OrderPeaks

__all__ = ["EXACT_OPS", "names", "accepts", "built_lazily", "memory_limit", "proxy", "built_for", "sizes",
           "extrapolate", "affine", "registered", "lowered", "placement", "uniform_bubble"]

_PROXY = {"zb-1p": "zb-h1", "zb-2p": "zb-h2", "zb-auto": "zb-h2", "v-half": "1f1b", "v-min": "1f1b"}


def names() -> list[str]:
    """The schedules a search tries unless told: every registered one but those whose memory
    cap the caller gives (zb-auto: at its default cap it is ZB-2p; asked for by name it is
    planned like it)."""
    return [name for name in schedules.names() if not schedules.spec(name).limit_given]


@lru_cache(maxsize=None)
def accepts(name: str, chunks: int) -> bool:
    """Whether ``name`` takes this many chunks (model stages per rank)."""
    try:
        schedules.build(name, ranks=2, microbatches=8, chunks=chunks)
    except schedules.ScheduleError:
        return False
    return True


def built_lazily(name: str) -> bool:
    """Whether the pre-filter takes ``name``'s memory limit and proxy instead of building it."""
    return schedules.spec(name).memory_limit is not None


def memory_limit(name: str, pp: int) -> float:
    """The cap on stage-microbatch activations a rank holds (the registry's): p or 2p for
    ZB-1p and ZB-2p, twice the V budget (two chunks a rank) for V-Half and V-Min."""
    return schedules.spec(name).memory_limit(pp)


def proxy(name: str) -> str:
    """The registered schedule whose closed forms stand in for ``name`` before it is built:
    ZB-1p is ZB-H1's shape at 1F1B's memory, ZB-2p (and zb-auto) ZB-H2's at about twice it;
    V-Half and V-Min take 1F1B's bubble (theirs is measured at 0.37-0.58 and 0.86-1.66 of
    it, schedules.v_shape)."""
    return _PROXY.get(name, name)


def built_for(name: str, pp: int, m: int, costs: StageCosts) -> schedules.Schedule:
    """A schedule built for costs, for ``costs`` to three significant digits: layouts whose
    costs differ by less share one build."""
    return _built_for(name, pp, m, replace(costs, **{f.name: float(f"{getattr(costs, f.name):.3g}")
                                                     for f in fields(costs)}))


@lru_cache(maxsize=64)
def _built_for(name: str, pp: int, m: int, costs: StageCosts) -> schedules.Schedule:
    return schedules.build(name, ranks=pp, microbatches=m, costs=costs)


EXACT_OPS = 60_000
"""Compute ops up to which a schedule is built and simulated at its own microbatch count."""


def sizes(name: str, pp: int, m: int, v: int) -> tuple[int, ...]:
    """The microbatch counts a layout is built at: (m,) up to ``EXACT_OPS`` compute ops,
    else three smaller counts of the same structure (see the module docstring) that the
    schedule takes, or (m,) when there are none."""
    if 3 * m * pp * v <= EXACT_OPS:
        return (m,)
    rounds = m // pp
    group = m // rounds if rounds and m % rounds == 0 else pp
    for unit, rest in ((group, 0), (pp, m % pp)):
        at = (2 * unit + rest, 3 * unit + rest, 4 * unit + rest)
        if at[-1] < m and all(schedules.registry.accepts(name, pp, k, v) for k in at):
            return at
    return (m,)


def extrapolate(m: int, at: tuple[int, ...], values: list[float]) -> float:
    """``values`` measured at the counts ``at``, continued affinely to ``m`` through the first two."""
    if len(at) == 1:
        return values[0]
    (m1, m2), (y1, y2) = at[:2], values[:2]
    return y1 + (m - m1) * (y2 - y1) / (m2 - m1)


def affine(at: tuple[int, ...], values: list[float]) -> bool:
    """Whether the third value lies on the line through the first two."""
    return math.isclose(extrapolate(at[2], at, values), values[2], rel_tol=1e-9, abs_tol=1e-9)


@lru_cache(maxsize=256)
def registered(name: str, pp: int, m: int, v: int) -> tuple[schedules.Schedule, OrderPeaks]:
    schedule = schedules.build(name, ranks=pp, microbatches=m, chunks=v)
    return schedule, OrderPeaks(schedule)


def _looping(p: int, v: int) -> tuple[int, ...]:
    return tuple(s % p for s in range(p * v))


def _v_shape(p: int, v: int) -> tuple[int, ...]:
    return tuple(s if s < p else 2 * p - 1 - s for s in range(p * v))


@lru_cache(maxsize=None)
def placement(name: str, pp: int, v: int) -> tuple[tuple[int, ...], ...]:
    """The stages of each rank. Every placement in use is looping (stage s on rank s mod p)
    or a V (s on rank s, then 2p - 1 - s): which one is read off a build at three ranks,
    so a large pipeline is not built just to learn it; anything else is read off a build
    at the real size."""
    small = next((m for m in range(6, 64) if schedules.registry.accepts(name, 3, m, v)), None)
    seen = schedules.build(name, ranks=3, microbatches=small, chunks=v).stage_to_rank if small else None
    if seen == _looping(3, v):
        where = _looping(pp, v)
    elif seen == _v_shape(3, v):
        where = _v_shape(pp, v)
    else:
        where = schedules.build(name, ranks=pp, microbatches=2 * pp, chunks=v).stage_to_rank
    return tuple(tuple(s for s, r in enumerate(where) if r == rank) for rank in range(pp))


@lru_cache(maxsize=256)
def lowered(name: str, pp: int, m: int, v: int) -> tuple[schedules.Lowered, dict]:
    """The validated (lowered) schedule and its compute ops by kind: what a dry run needs,
    once per schedule whatever the costs."""
    schedule = registered(name, pp, m, v)[0]
    counts: dict = {}
    for _, op in schedule:
        for part in op.parts:
            if part.kind in COMPUTE_KINDS:
                counts[part.kind] = counts.get(part.kind, 0) + 1
    return schedules.validate(schedule, "async"), counts


@lru_cache(maxsize=None)
def uniform_bubble(name: str, pp: int, m: int, v: int, ratios: tuple[float, float, float]) -> float:
    """Bubble at uniform stage costs with free communication, from the schedules' own dry
    run at those costs (no SimPy, O(ops)); for a large m at the two counts the memory is
    read at, the makespan extrapolated (see the module docstring)."""
    cost = {OpKind.F: ratios[0], OpKind.I: ratios[1], OpKind.W: ratios[2], OpKind.B: ratios[1] + ratios[2]}
    at = sizes(name, pp, m, v)[:2]
    spans, busy = [], []
    for k in at:
        checked, counts = lowered(name, pp, k, v)
        spans.append(schedules.dry_run(checked, durations=cost).makespan)
        busy.append(sum(n * cost[kind] for kind, n in counts.items()))
    span, work = extrapolate(m, at, spans), extrapolate(m, at, busy)
    return 1.0 - work / (pp * span) if span else 0.0


