"""ZB-V: zero-bubble pipeline with two stages per rank in a V (Qi et al., 2024,
"Pipeline Parallelism with Controllable Memory"; torch's ScheduleZBVZeroBubble).

Stage s lives on rank s for s < p and on rank 2p - 1 - s otherwise, so the first and the
last stage share rank 0: the turn from forward to backward happens on rank 0 locally,
and each rank's two chunks see the wave pass twice. Backwards are split into I and W.

Phases on rank r (chunk 0 is stage r, chunk 1 is stage 2p - 1 - r):
  warm-up  2(p - r) - 1 forwards of chunk 0 (the depth of the V below r, counted twice,
           minus one), then r pairs (chunk-1 F, chunk-0 F), then p - r triples
           (chunk-1 F, I, W) that start the backward wave;
  steady   (chunk-0 F, chunk-0 I, chunk-0 W, chunk-1 F, chunk-1 I, chunk-1 W);
  cool-down r pairs of I (chunk 0, chunk 1), p - r pairs (chunk-0 I, W), then the
           deferred W passes, which fill the tail where upstream ranks would idle.
The phases assume at least 2p - 1 microbatches; for fewer, the same order is built for
2p - 1 and the ops of microbatches that do not exist are dropped.

No closed form: with t_f = t_i = t_w and enough microbatches the bubble is close to
zero while peak activations stay at 1F1B's level.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_zbv"]

F, I, W = OpKind.F, OpKind.I, OpKind.W


def _rank_order(ranks: int, microbatches: int, rank: int) -> list[tuple[OpKind, int, int]]:
    """(kind, chunk, mb) for one rank over ``microbatches`` (>= 2p - 1) microbatches: the
    phases of the module docstring, each a group of (kind, chunk) repeated."""
    n = microbatches
    order: list[tuple[OpKind, int, int]] = []
    done = {(kind, chunk): 0 for kind in (F, I, W) for chunk in (0, 1)}

    def emit(times: int, *group: tuple[OpKind, int]) -> None:
        for _ in range(times):
            for kind, chunk in group:
                order.append((kind, chunk, done[kind, chunk]))
                done[kind, chunk] += 1

    emit(2 * (ranks - rank) - 1, (F, 0))  # warm-up
    emit(rank, (F, 1), (F, 0))
    emit(ranks - rank, (F, 1), (I, 1), (W, 1))
    while done[F, 1] < done[F, 0] or done[F, 0] < n:  # steady
        if done[F, 0] < n:
            emit(1, (F, 0))
        emit(1, (I, 0), (W, 0), (F, 1), (I, 1), (W, 1))
    emit(rank, (I, 0), (I, 1))  # cool-down
    emit(ranks - rank, (I, 0), (W, 0))
    for chunk in (1, 0):  # the deferred W
        emit(done[I, chunk] - done[W, chunk], (W, chunk))
    return order


@register("zbv", chunks_ok=lambda v: v == 2, rule="chunks must be 2 (the two arms of the V)",
          summary="ZB-V (Qi et al. 2024, torch ScheduleZBVZeroBubble): V placement, near zero bubble at 1F1B memory; no closed form")
def build_zbv(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    padded = max(microbatches, 2 * ranks - 1)
    ops = []
    for rank in range(ranks):
        stage_of_chunk = (rank, 2 * ranks - 1 - rank)
        ops.append(
            [
                Op(kind, stage_of_chunk[chunk], mb)
                for kind, chunk, mb in _rank_order(ranks, padded, rank)
                if mb < microbatches
            ]
        )
    stage_to_rank = tuple(s if s < ranks else 2 * ranks - 1 - s for s in range(2 * ranks))
    return Schedule("zbv", ranks, microbatches, 2 * ranks, stage_to_rank, ops)
