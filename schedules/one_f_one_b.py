"""1F1B, also PipeDream-Flush (Narayanan et al., SOSP 2019; Megatron-LM, SC 2021).

Rank r runs p - r - 1 warm-up forwards: that is how many microbatches are still in
flight downstream of it when the last rank finishes its first forward, so the first
backward reaches r exactly as r would otherwise run out of work. Then it alternates
one forward with one backward, and ends with the cool-down backwards.

Uniform costs, free communication: makespan (m + p - 1)(t_f + t_b), bubble fraction
(p - 1) / (m + p - 1) — the same as GPipe — but rank r holds only min(m, p - r)
microbatches' activations instead of m. With m < p the warm-up is cut to m.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_1f1b", "one_f_one_b_order"]


def one_f_one_b_order(ranks: int, microbatches: int, rank: int) -> list[tuple[OpKind, int]]:
    """(F or B, mb) in 1F1B order for one rank; shared with the split-backward variant."""
    warmup = min(ranks - rank - 1, microbatches)
    order = [(OpKind.F, mb) for mb in range(warmup)]
    for i in range(microbatches - warmup):
        order += [(OpKind.F, warmup + i), (OpKind.B, i)]
    order += [(OpKind.B, mb) for mb in range(microbatches - warmup, microbatches)]
    return order


@register("1f1b", summary="1F1B / PipeDream-Flush (Narayanan et al. 2019, 2021); bubble (p-1)/(m+p-1), rank r holds p-r")
def build_1f1b(ranks: int, microbatches: int, chunks: int = 1) -> Schedule:
    ops = [
        [Op(kind, rank, mb) for kind, mb in one_f_one_b_order(ranks, microbatches, rank)]
        for rank in range(ranks)
    ]
    return Schedule("1f1b", ranks, microbatches, ranks, tuple(range(ranks)), ops)
