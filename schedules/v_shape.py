"""V-Half and V-Min: V-shape schedules with controllable memory (Qi et al., "Pipeline
Parallelism with Controllable Memory", NeurIPS 2024).

Two stages per rank in a V, as ZB-V (stage s on rank s for s < p, on 2p - 1 - s
otherwise), with the backward split into I and W. The paper builds its family from a
repeated building block whose lifespan fixes the activation memory; here the same
trade is made by the zero-bubble heuristic of :mod:`schedules.synthesis` at uniform
costs (t_f = t_i = t_w) under the paper's memory budget, on the V placement, trying caps
on the microbatches in flight and keeping the order with the smallest makespan:

  v-half  peak about (p + 2) // 2 microbatch rank-shares (1F1B: p); the paper's bubble
          is about half of 1F1B's;
  v-min   peak about (p + 4) // 3 rank-shares, bubble about two thirds of 1F1B's;

plus small terms. A rank-share is one microbatch's activations for a whole rank's share
of the model; each of the two chunks holds half of one (``Costs.model_share(2)``), so the
budgets are 2 ((p + 2) // 2) and 2 ((p + 4) // 3) chunk-microbatches. Measured
(tests/test_schedules_new.py, docs/schedules.md): both peaks sit exactly at their budgets; v-half's
bubble is 0.37-0.58 of 1F1B's (p = 4, 8, 16; m = 2p, 4p), the paper's half; v-min's is
0.86-1.66 of it, not the paper's two thirds: this heuristic does not find the paper's
building block at a third of the memory. No closed form (:func:`schedules.analytic.makespan`
raises).
"""

from __future__ import annotations

from .ir import Schedule
from .registry import StageCosts, register
from .synthesis import greedy

__all__ = ["build_v_half", "build_v_min", "budget"]

_UNIT = StageCosts()
_CAPS_TRIED = 5


def budget(name: str, ranks: int) -> int:
    """The memory budget in microbatch rank-shares: (p + 2) // 2 or (p + 4) // 3."""
    return (ranks + 2) // 2 if name == "v-half" else (ranks + 4) // 3


def _build(name: str, ranks: int, microbatches: int) -> Schedule:
    where = tuple(s if s < ranks else 2 * ranks - 1 - s for s in range(2 * ranks))
    # A microbatch's round trip from stage 0 and back takes at least 4p chunk-ops and each
    # rank has 6 chunk-ops of work per microbatch, so about 2p/3 in flight keep it busy;
    # the caps tried run from p/2 to 3p/2 (the paper's lifespan knob, in another form).
    # Every cap in that range up to p = 16 (17 of them); beyond, 5 spread evenly over it, so
    # that a build stays about linear in p * m (p = 64, m = 96: seconds, not a minute).
    low, high = max(1, ranks // 2), 3 * ranks // 2
    tried = high - low + 1 if high - low + 1 <= 17 else _CAPS_TRIED
    caps = (None, *sorted({low + round(k * (high - low) / max(1, tried - 1)) for k in range(tried)}))
    ops = greedy(ranks, microbatches, where, _UNIT, memory_limit=2 * budget(name, ranks), inflight=caps,
                 by_makespan=True)
    return Schedule(name, ranks, microbatches, 2 * ranks, where, ops)


@register("v-half", chunks_ok=lambda v: v == 2, rule="chunks must be 2 (the two arms of the V)",
          memory_limit=lambda p: 2 * budget("v-half", p),
          summary="V-Half (Qi et al. NeurIPS'24): V placement, peak ~(p+2)//2 rank-shares, bubble ~1/2 of 1F1B's")
def build_v_half(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    return _build("v-half", ranks, microbatches)


@register("v-min", chunks_ok=lambda v: v == 2, rule="chunks must be 2 (the two arms of the V)",
          memory_limit=lambda p: 2 * budget("v-min", p),
          summary="V-Min (Qi et al. NeurIPS'24): V placement, peak ~(p+4)//3 rank-shares, bubble ~2/3 of 1F1B's")
def build_v_min(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    return _build("v-min", ranks, microbatches)
