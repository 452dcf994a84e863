"""Breadth-first pipeline parallelism, looped placement (Lamy-Poirier, "Breadth-First
Pipeline Parallelism", MLSys 2023; torch's ScheduleLoopedBFS).

Each rank holds v = chunks stages, placed looping (stage s on rank s mod p). Where
interleaved 1F1B goes depth first, this goes breadth first: rank r runs the forwards of
every microbatch through its first chunk, then through its second, and so on; then the
backwards chunk by chunk in reverse, each chunk's microbatches last-first (the last
microbatch's gradient is the first one back). This is torch's op order, op for op.

Uniform per-chunk costs, free communication, m >= p: no rank waits inside a phase (a
chunk's m forwards take at least as long as one microbatch's trip round the other p - 1
ranks), so makespan (m v + p - 1)(t_f + t_b), bubble fraction (p - 1) / (m v + p - 1),
interleaved 1F1B's, with GPipe's memory: every rank holds all m v chunk activations at
the turn. m < p: no closed form (raises).
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_looped_bfs"]


@register("looped-bfs", chunks_ok=lambda v: v >= 1, rule="chunks (model stages per rank) must be >= 1", default=2,
          summary="breadth-first looped pipeline (Lamy-Poirier 2023, torch ScheduleLoopedBFS); "
                  "bubble (p-1)/(mv+p-1) for m >= p, all m v activations held")
def build_looped_bfs(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    ops = []
    for rank in range(ranks):
        stages = range(rank, ranks * chunks, ranks)
        rank_ops = [Op(OpKind.F, s, mb) for s in stages for mb in range(microbatches)]
        rank_ops += [Op(OpKind.B, s, mb) for s in reversed(stages) for mb in reversed(range(microbatches))]
        ops.append(rank_ops)
    stage_to_rank = tuple(s % ranks for s in range(ranks * chunks))
    return Schedule("looped-bfs", ranks, microbatches, ranks * chunks, stage_to_rank, ops)
