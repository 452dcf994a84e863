"""Naive pipeline: one microbatch at a time through every stage, forward then backward.

The textbook picture of model parallelism without pipelining: only one rank works at
any moment, so with uniform costs the makespan is m * p * (t_f + t_b) and each rank is
busy 1/p of the time (bubble fraction 1 - 1/p).
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_naive"]


@register("naive", summary="one microbatch at a time (plain model parallelism); bubble 1 - 1/p, 1 activation held")
def build_naive(ranks: int, microbatches: int, chunks: int = 1) -> Schedule:
    # Same per-rank op order as 1F1B on the last rank, applied everywhere: B(mb) before
    # F(mb + 1) on rank 0 forbids any overlap between microbatches.
    ops = [
        [Op(kind, rank, mb) for mb in range(microbatches) for kind in (OpKind.F, OpKind.B)]
        for rank in range(ranks)
    ]
    return Schedule("naive", ranks, microbatches, ranks, tuple(range(ranks)), ops)
