"""Interleaved 1F1B with virtual stages (Narayanan et al., Megatron-LM, SC 2021).

Each rank holds v = chunks model stages, placed looping: stage s lives on rank s mod p.
Microbatches go through the chunks in rounds: with torch 2.13's rule (its "flex" form
of Megatron's schedule, ``ScheduleInterleaved1F1B``) there are max(1, m // p) rounds of
n = m / rounds microbatches each, so any m divisible by the number of rounds builds
(p = 4: m = 3, 5, 6, 7, 10 do; m = 9, 11, 13, 14 do not). With m divisible by p, n = p: Megatron's
original schedule.

Rank r runs min(m v, (v - 1) n + 2(p - r - 1)) chunk-forwards of warm-up: (v - 1) n fill
its later chunks with one round, and 2(p - r - 1) cover the round trip to the last rank
and back. Then it alternates one chunk-forward with one chunk-backward (backwards visit
the chunks in reverse, a round at a time), then cools down. This is torch's op order,
op for op (tests/test_schedules_torch.py).

Uniform per-chunk costs t_f, t_b and free communication, m divisible by p:
makespan (m v + p - 1)(t_f + t_b), bubble fraction (p - 1) / (m v + p - 1). Written in
per-rank times (a chunk costs 1/v of a rank's stage) that is Megatron's
(m v + p - 1)(t_f + t_b) / v: the bubble shrinks by v at the price of more activations
in flight and v times the messages. Other m: no closed form (raises).
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_interleaved", "rounds_ok", "rounds_rule", "round_size", "chunk_order", "LOOPED", "warmup_of",
           "looping"]


def rounds_ok(ranks: int, microbatches: int) -> bool:
    """torch's rule: m divisible by its number of rounds, max(1, m // p)."""
    return microbatches % max(1, microbatches // ranks) == 0


rounds_rule = "microbatches must be divisible by max(1, microbatches // ranks) rounds (torch's rule)"

LOOPED = {"chunks_ok": lambda v: v >= 2, "rule": "chunks (model stages per rank) must be >= 2",
          "microbatches_ok": rounds_ok, "microbatch_rule": rounds_rule}
"""The registry's rules for a schedule of looped chunks in torch's rounds (this one and
:mod:`schedules.interleaved_zb`)."""


def round_size(ranks: int, microbatches: int) -> int:
    """Microbatches per round: m / max(1, m // p)."""
    return microbatches // max(1, microbatches // ranks)


def chunk_order(ranks: int, microbatches: int, chunks: int, rank: int, backward: bool) -> list[tuple[int, int]]:
    """(stage, mb) of the rank's chunk-forwards (or chunk-backwards) in order: round by
    round, each round through the chunks (reversed for backwards)."""
    n = round_size(ranks, microbatches)
    visits = range(chunks - 1, -1, -1) if backward else range(chunks)
    return [(chunk * ranks + rank, first + j) for first in range(0, microbatches, n) for chunk in visits
            for j in range(n)]


def warmup_of(ranks: int, microbatches: int, chunks: int, rank: int, hops: int) -> int:
    """Chunk-forwards rank r runs before its first backward: (v - 1) n fill its later chunks
    with one round, and ``hops`` per rank after it cover the way to the last rank and back
    (2 for a full backward; 1 when only the input-backward is on the way back)."""
    return min((chunks - 1) * round_size(ranks, microbatches) + hops * (ranks - rank - 1), microbatches * chunks)


def looping(name: str, ranks: int, microbatches: int, chunks: int, ops: list[list[Op]]) -> Schedule:
    """The schedule of these lists on the looped placement: stage s on rank s mod p."""
    return Schedule(name, ranks, microbatches, ranks * chunks, tuple(s % ranks for s in range(ranks * chunks)), ops)


@register("interleaved-1f1b", **LOOPED, summary="Megatron-LM interleaved 1F1B (Narayanan et al. SC'21), torch's "
                                               "rounds for any m; bubble (p-1)/(mv+p-1) when p divides m")
def build_interleaved(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    ops = []
    for rank in range(ranks):
        fwd = [Op(OpKind.F, s, mb) for s, mb in chunk_order(ranks, microbatches, chunks, rank, backward=False)]
        bwd = [Op(OpKind.B, s, mb) for s, mb in chunk_order(ranks, microbatches, chunks, rank, backward=True)]
        warmup = warmup_of(ranks, microbatches, chunks, rank, hops=2)
        rank_ops = fwd[:warmup]
        for f, b in zip(fwd[warmup:], bwd):
            rank_ops += (f, b)
        rank_ops += bwd[len(bwd) - warmup:]
        ops.append(rank_ops)
    return looping("interleaved-1f1b", ranks, microbatches, chunks, ops)
