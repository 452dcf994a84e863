"""Interleaved 1F1B with virtual stages (Narayanan et al., Megatron-LM, SC 2021).

Each rank holds v = chunks model stages, placed looping: stage s lives on rank s mod p.
Microbatches go through the chunks in groups of p, so the schedule needs m divisible
by p (Megatron's original constraint; enforced here).

Rank r runs 2(p - r - 1) + (v - 1)p chunk-forwards of warm-up: (v - 1)p fill its later
chunks with one round of every microbatch group, and 2(p - r - 1) cover the round trip
to the last rank and back. Then it alternates one chunk-forward with one chunk-backward
(backwards visit the chunks in reverse), then cools down.

Uniform per-chunk costs t_f, t_b and free communication, m divisible by p:
makespan (m v + p - 1)(t_f + t_b), bubble fraction (p - 1) / (m v + p - 1). Written in
per-rank times (a chunk costs 1/v of a rank's stage) that is Megatron's
(m v + p - 1)(t_f + t_b) / v: the bubble shrinks by v at the price of more activations
in flight and v times the messages.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule, ScheduleError
from .registry import register


def _stage_and_mb(k: int, ranks: int, chunks: int, rank: int, backward: bool) -> tuple[int, int]:
    """The k-th chunk-forward (or chunk-backward) of ``rank`` as (stage, mb)."""
    group, within = divmod(k, ranks * chunks)
    chunk = within // ranks
    if backward:
        chunk = chunks - 1 - chunk
    return chunk * ranks + rank, group * ranks + within % ranks


@register("interleaved-1f1b", chunks_ok=lambda v: v >= 2, rule="chunks (model stages per rank) must be >= 2")
def build_interleaved(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    if microbatches % ranks:
        raise ScheduleError(
            f"interleaved-1f1b: microbatches ({microbatches}) must be divisible by ranks ({ranks})"
        )
    total = microbatches * chunks
    ops = []
    for rank in range(ranks):
        fwd = [Op(OpKind.F, *_stage_and_mb(k, ranks, chunks, rank, backward=False)) for k in range(total)]
        bwd = [Op(OpKind.B, *_stage_and_mb(k, ranks, chunks, rank, backward=True)) for k in range(total)]
        warmup = min(2 * (ranks - rank - 1) + (chunks - 1) * ranks, total)
        rank_ops = fwd[:warmup]
        for f, b in zip(fwd[warmup:], bwd):
            rank_ops += (f, b)
        rank_ops += bwd[total - warmup:]
        ops.append(rank_ops)
    stage_to_rank = tuple(s % ranks for s in range(ranks * chunks))
    return Schedule("interleaved-1f1b", ranks, microbatches, ranks * chunks, stage_to_rank, ops)
