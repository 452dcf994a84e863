"""ZB-H2: zero bubble at up to 2p - 1 microbatches held (Qi et al., "Zero Bubble Pipeline
Parallelism", ICLR 2024, §2.2 and Table 2).

ZB-H1's split backward with more forwards in the warm-up: rank r runs
w_r = min(m, 2(p - r) - 1) forwards first, exactly enough that (at t_f = t_i = t_w) the
first input gradient reaches it as the last of them ends: it returns after r's own
forward went to the last rank and back, (p - 1 - r) hops each way. Then
(I, F, W) per microbatch while forwards last, and in the tail every remaining I back to
back, then the remaining W: deferring those W lets the input gradients run up the
pipeline without waiting, which turns 1F1B's trapezoid into a parallelogram. Rank r
holds up to w_r microbatches (rank 0: 2p - 1).

The paper's figure counts a stage's span from its own first op, with the optimizer
synchronisation removed (so a step's parallelogram can overlap the next one's):
longest span m(t_f + t_b) + (p - 1)(t_f + t_i - 2 t_w), zero bubble at
t_f = t_i = t_w. This project's makespan runs from 0 for every rank, and rank p - 1
cannot start before (p - 1) t_f, so the same value is the makespan only where
t_i >= 2 t_w (and t_w <= t_f): :func:`schedules.analytic.makespan` raises outside that
range, and :func:`schedules.analytic.longest_span` gives the paper's measure where it
holds (tests/test_schedules_new.py checks both against the dry run).
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_zb_h2"]

F, I, W = OpKind.F, OpKind.I, OpKind.W


@register("zb-h2", summary="ZB-H2 (Qi et al. ICLR'24): stage span m(t_f+t_b)+(p-1)(t_f+t_i-2t_w), "
                           "up to 2p-1 microbatches held")
def build_zb_h2(ranks: int, microbatches: int, chunks: int = 1) -> Schedule:
    m = microbatches
    ops = []
    for rank in range(ranks):
        warmup = min(m, 2 * (ranks - rank) - 1)
        lag = 2 * rank  # W runs 2r microbatches behind I
        rank_ops = [Op(F, rank, mb) for mb in range(warmup)]
        weights = 0
        for j in range(m):
            rank_ops.append(Op(I, rank, j))
            if warmup + j < m:
                rank_ops.append(Op(F, rank, warmup + j))
            if j >= lag:
                rank_ops.append(Op(W, rank, weights))
                weights += 1
        rank_ops += [Op(W, rank, mb) for mb in range(weights, m)]
        ops.append(rank_ops)
    return Schedule("zb-h2", ranks, m, ranks, tuple(range(ranks)), ops)
