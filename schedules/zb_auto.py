"""ZB-1p, ZB-2p and zb-auto: the zero-bubble paper's automatic schedules (Qi et al., "Zero
Bubble Pipeline Parallelism", ICLR 2024, §3.1), built for costs.

Unlike the other builders these are not functions of (ranks, microbatches, chunks) alone:
the heuristic of :mod:`schedules.synthesis` times the ranks as it orders them, with one
stage's t_f, t_i, t_w and a hop's t_comm (:class:`schedules.registry.StageCosts`), under a
cap on the stage-microbatch activations a rank holds. ZB-1p caps them at p (1F1B's
memory), ZB-2p at 2p; zb-auto takes the cap from its caller (default 2p). One stage a
rank. No closed form: the paper's own numbers are the oracle
(tests/test_schedules_synthesis.py).
"""

from __future__ import annotations

import math
from typing import Callable

from .bounds import BYTES_PER_OP
from .ir import Schedule, ScheduleError
from .registry import StageCosts, build, register
from .synthesis import greedy

__all__ = ["synthesize"]


def _built_for(name: str) -> Callable[[int, int, int, StageCosts, float], Schedule]:
    """The builder of ``name``: the heuristic's best order for these costs under the cap."""

    def builder(ranks: int, microbatches: int, chunks: int, costs: StageCosts, memory_limit: float) -> Schedule:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, float)) \
                or not math.isfinite(memory_limit) or memory_limit <= 0:
            raise ScheduleError(f"memory_limit must be a finite number > 0, got {memory_limit!r}")
        if memory_limit < 1:
            raise ScheduleError(f"memory_limit must be >= 1 (one microbatch's activations), got {memory_limit!r}")
        where = tuple(range(ranks))
        ops = greedy(ranks, microbatches, where, costs, memory_limit, costs.w_memory_fraction)
        return Schedule(name, ranks, microbatches, ranks, where, ops)

    return builder


register("zb-1p", costed=True, memory_limit=lambda p: p,
         summary="ZB-1p (Qi et al. ICLR'24 §3.1): zero bubble synthesized for your costs, at most p activations "
                 "(1F1B's memory)")(_built_for("zb-1p"))
register("zb-2p", costed=True, memory_limit=lambda p: 2 * p,
         summary="ZB-2p (Qi et al. ICLR'24 §3.1): zero bubble synthesized for your costs, at most 2p activations")(
    _built_for("zb-2p"))
register("zb-auto", costed=True, memory_limit=lambda p: 2 * p, limit_given=True,
         summary="zero bubble synthesized for your costs under a memory cap (Qi et al. ICLR'24 §3.1); "
                 "memory_limit p = ZB-1p, 2p = ZB-2p (default)")(_built_for("zb-auto"))


def synthesize(ranks: int, microbatches: int, t_f: float, t_i: float, t_w: float, t_comm: float = 0.0,
               memory_limit: float | None = None, w_memory_fraction: float = 0.5, *,
               bytes_per_op: int = BYTES_PER_OP) -> Schedule:
    """zb-auto for these costs: ``build("zb-auto", ranks, microbatches, costs=StageCosts(...),
    memory_limit=...)``. ``memory_limit`` (default 2p, the paper's ZB-2p) is in one
    microbatch's activations on one stage; p gives ZB-1p."""
    for label, value in (("ranks", ranks), ("microbatches", microbatches)):  # before the costs' checks
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScheduleError(f"{label} must be a whole number >= 1, got {value!r}")
    return build("zb-auto", ranks, microbatches, costs=StageCosts(t_f, t_i, t_w, t_comm, w_memory_fraction),
                 memory_limit=memory_limit, bytes_per_op=bytes_per_op)
