"""The planner's schedules: every registered one, plus ``zb-1p`` and ``zb-2p``.

ZB-1p and ZB-2p are the zero-bubble paper's automatically scheduled pipelines (Qi et al.,
ICLR 2024, §3.1) under a memory limit of p and 2p microbatch-stage activations:
:func:`schedules.synthesize` builds them from the stage costs the planner computes (the
mean F, I and W over the stages and the slowest hop), so unlike a registered schedule they
are not a function of (ranks, microbatches, chunks) alone. This module is the one place
the planner reaches them; when a costed schedule joins the registry it can take their
place here without the search noticing.

Schedules built by a search under a memory limit (these two, and the registered V-Half and
V-Min, whose builder runs the same heuristic: seconds for p = 32) are not built in the
pre-filter: their activations there are their limit's, which the search never exceeds, and
their bubble a closed form's (``proxy``); the simulation builds them for real.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import schedules
from schedules.v_shape import budget

__all__ = ["SYNTHESIZED", "Timing", "names", "accepts", "is_synthesized", "built_lazily", "build", "memory_limit",
           "proxy"]

SYNTHESIZED = {"zb-1p": 1, "zb-2p": 2}
"""Planner schedule -> its memory limit in multiples of p (stage-microbatch activations)."""

_SEARCHED = ("v-half", "v-min")
"""Registered schedules whose builder searches under a memory budget (schedules.v_shape)."""

_PROXY = {"zb-1p": "zb-h1", "zb-2p": "zb-h2", "v-half": "1f1b", "v-min": "1f1b"}


class Timing(NamedTuple):
    """What the synthesis plans with: one stage's F, I, W and a hop, in seconds."""

    t_f: float
    t_i: float
    t_w: float
    t_comm: float

    def rounded(self) -> Timing:
        """Three significant digits: layouts whose costs differ by less share one synthesis."""
        return Timing(*(float(f"{x:.3g}") for x in self))


def names() -> list[str]:
    """Registered schedules in registry order, then the synthesized ones."""
    return schedules.names() + list(SYNTHESIZED)


def is_synthesized(name: str) -> bool:
    return name in SYNTHESIZED


@lru_cache(maxsize=None)
def accepts(name: str, chunks: int) -> bool:
    """Whether ``name`` takes this many chunks (model stages per rank)."""
    if is_synthesized(name):
        return chunks == 1
    try:
        schedules.build(name, ranks=2, microbatches=8, chunks=chunks)
    except schedules.ScheduleError:
        return False
    return True


def built_lazily(name: str) -> bool:
    """Whether the pre-filter takes ``name``'s memory limit and proxy instead of building it."""
    return is_synthesized(name) or name in _SEARCHED


def memory_limit(name: str, pp: int) -> int:
    """The cap on stage-microbatch activations a rank holds: p or 2p for ZB-1p and ZB-2p,
    twice the V budget (two chunks a rank) for V-Half and V-Min."""
    return SYNTHESIZED[name] * pp if is_synthesized(name) else 2 * budget(name, pp)


def proxy(name: str) -> str:
    """The registered schedule whose closed forms stand in for ``name`` before it is built:
    ZB-1p is ZB-H1's shape at 1F1B's memory, ZB-2p ZB-H2's at about twice it; V-Half and
    V-Min take 1F1B's bubble (theirs is measured at 0.37-0.58 and 0.86-1.66 of it,
    schedules.v_shape)."""
    return _PROXY.get(name, name)


def build(name: str, pp: int, microbatches: int, chunks: int, timing: Timing | None = None) -> schedules.Schedule:
    """The named schedule; a synthesized one needs ``timing``."""
    if not is_synthesized(name):
        return schedules.build(name, ranks=pp, microbatches=microbatches, chunks=chunks)
    if timing is None:
        raise ValueError(f"{name} is synthesized from stage costs: give its timing")
    if chunks != 1:
        raise schedules.ScheduleError(f"{name}: chunks must be 1, got chunks={chunks!r}")
    return _synthesize(name, pp, microbatches, timing.rounded())


@lru_cache(maxsize=64)
def _synthesize(name: str, pp: int, microbatches: int, timing: Timing) -> schedules.Schedule:
    return schedules.synthesize(pp, microbatches, *timing, memory_limit=memory_limit(name, pp))
