"""Interleaved zero bubble: zero bubble's split backward on looped stages (Qi et al.,
"Zero Bubble Pipeline Parallelism", ICLR 2024; torch's ScheduleInterleavedZeroBubble).

The chunk order is interleaved 1F1B's with torch's rounds (n = m / max(1, m // p)
microbatches a round; :mod:`schedules.interleaved`), the backward split into I and W:
rank r runs min(m v, (v - 1) n + (p - r - 1)) warm-up chunk-forwards (one hop less than
interleaved 1F1B, since only I, not the full backward, is on the way back), then
(F, I) pairs, then the remaining I. The first r of its I run without their W (that
deficit is what fills the cool-down, as in ZB-H1); from then on every I is followed by
the oldest W still owed, and the owed W close the list. This is torch's op order.

No closed form (raises): with t_f = t_i = t_w and m a multiple of p the bubble is
below interleaved 1F1B's; the simulator gives it for any costs.
"""

from __future__ import annotations

from .interleaved import LOOPED, chunk_order, looping, warmup_of
from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_interleaved_zb"]

F, I, W = OpKind.F, OpKind.I, OpKind.W


@register("interleaved-zb", **LOOPED, summary="zero bubble on looped stages (Qi et al. ICLR'24, torch "
                                             "ScheduleInterleavedZeroBubble); no closed form")
def build_interleaved_zb(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    total = microbatches * chunks
    ops = []
    for rank in range(ranks):
        fwd = chunk_order(ranks, microbatches, chunks, rank, backward=False)
        bwd = chunk_order(ranks, microbatches, chunks, rank, backward=True)
        warmup = warmup_of(ranks, microbatches, chunks, rank, hops=1)
        rank_ops = [Op(F, *fwd[k]) for k in range(warmup)]
        weights = 0  # W passes run so far; they follow the I order
        for k in range(total):
            if k < total - warmup:
                rank_ops.append(Op(F, *fwd[warmup + k]))
            rank_ops.append(Op(I, *bwd[k]))
            if k >= rank:  # the first `rank` I defer their W
                rank_ops.append(Op(W, *bwd[weights]))
                weights += 1
        rank_ops += [Op(W, *bwd[k]) for k in range(weights, total)]
        ops.append(rank_ops)
    return looping("interleaved-zb", ranks, microbatches, chunks, ops)
