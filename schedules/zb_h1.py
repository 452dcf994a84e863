"""ZB-H1: 1F1B with the backward split into I (inputs) and W (weights) (Qi et al., ICLR 2024).

Only I lies on the critical path from the last stage back to the first, so the first
gradient reaches rank r after (p - 1 - r) input-backwards rather than full backwards.
Each rank keeps 1F1B's order of F and I and defers its W passes: rank r lags its W
by r microbatches, which fills the cool-down, where upstream ranks would otherwise
idle, with the r weight-gradients it held back (the last rank ends on p W passes).

Free communication, m >= p and t_w <= min(t_f, t_i) (so a W never overfills a gap):
makespan m(t_f + t_b) + (p - 1)(t_f + t_i - t_w); with t_f = t_i = t_w that is 3m + p - 1
time units and bubble fraction (p - 1) / (3m + p - 1), a third of 1F1B's bubble time.
Full activations in flight are 1F1B's (rank r: min(m, p - r)); rank r also keeps the
weight-gradient share of up to r deferred W passes.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .one_f_one_b import one_f_one_b_order
from .registry import register

__all__ = ["build_zb_h1"]


@register("zb-h1", summary="ZB-H1 (Qi et al. ICLR'24): makespan m(t_f+t_b)+(p-1)(t_f+t_i-t_w) for m >= p, t_w <= min(t_f, t_i); 1F1B memory")
def build_zb_h1(ranks: int, microbatches: int, chunks: int = 1) -> Schedule:
    ops = []
    for rank in range(ranks):
        rank_ops: list[Op] = []
        next_w = 0
        for kind, mb in one_f_one_b_order(ranks, microbatches, rank):
            if kind is OpKind.F:
                rank_ops.append(Op(OpKind.F, rank, mb))
                continue
            rank_ops.append(Op(OpKind.I, rank, mb))
            if mb >= rank:  # W lags I by `rank` microbatches
                rank_ops.append(Op(OpKind.W, rank, next_w))
                next_w += 1
        rank_ops += [Op(OpKind.W, rank, mb) for mb in range(next_w, microbatches)]
        ops.append(rank_ops)
    return Schedule("zb-h1", ranks, microbatches, ranks, tuple(range(ranks)), ops)
