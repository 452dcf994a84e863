"""GPipe: every forward, then every backward (Huang et al., NeurIPS 2019).

With uniform costs and free communication the makespan is (m + p - 1)(t_f + t_b), so the
bubble fraction is (p - 1) / (m + p - 1). Each rank holds the activations of all m
microbatches at the turn from forward to backward.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_gpipe"]


@register("gpipe", summary="GPipe (Huang et al. 2019): all F then all B; bubble (p-1)/(m+p-1), m activations held")
def build_gpipe(ranks: int, microbatches: int, chunks: int = 1) -> Schedule:
    ops = [
        [Op(OpKind.F, rank, mb) for mb in range(microbatches)]
        + [Op(OpKind.B, rank, mb) for mb in range(microbatches)]
        for rank in range(ranks)
    ]
    return Schedule("gpipe", ranks, microbatches, ranks, tuple(range(ranks)), ops)
