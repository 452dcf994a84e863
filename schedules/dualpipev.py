"""DualPipeV: DualPipe's bidirectional schedule folded onto a V (DeepSeek-AI, "DeepSeek-V3
Technical Report", 2024, and github.com/deepseek-ai/DualPipe; torch's ScheduleDualPipeV).

Two stages per rank in a V (stage s on rank s for s < p, on 2p - 1 - s otherwise), so
chunk 0 of rank r is stage r and chunk 1 is stage 2p - 1 - r. Its signature op is the
overlapped pair OVERLAP_F_B, ``(0F7;7B3)OVERLAP_F_B``: the forward of one chunk and the
full backward of the other run at once, so that one's communication (MoE all-to-all)
hides behind the other's compute (:attr:`simulator.Costs.overlap_f_b` prices that).
Rank r, in eight phases (torch's order, op for op):
  1. 2(p - r - 1) chunk-0 forwards;   2. r + 1 pairs (chunk-0 F, chunk-1 F);
  3. p - r - 1 of (chunk-1 I, the oldest owed W, chunk-1 F): zero bubble for the turn;
  4. m - 2p + r + 1 of (pair F0 with B1, pair F1 with B0); rank p - 1 runs its first
     F0 and B1 apart, which shortens the bubble;
  5. p - r - 1 of (chunk-1 B, pair F1 with B0);
  6. r + 1 of (chunk-1 backward, chunk-0 backward), split into I (W owed) from the
     middle on;  7. p - r - 1 of (owed W, chunk-0 backward);  8. r + 1 owed W.
Needs m >= 2p microbatches (torch's rule: as many as stages).

DualPipe's bubble, with its B the full backward and F&B an overlapped pair:
(p/2 - 1)(F&B + B - 3W) against 1F1B's (p - 1)(F + B), at p + 1 activations held and
twice the parameters (DeepSeek's table; the V keeps one copy). That is a table entry,
not a makespan of this order, so :func:`schedules.analytic.makespan` raises for it; the
simulator gives it for any costs.
"""

from __future__ import annotations

from .ir import Op, OpKind, Schedule
from .registry import register

__all__ = ["build_dualpipev"]

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W


class _Rank:
    """One rank's list with per-(stage, kind) microbatch counters; a full B and an I share
    the backward counter, and an I owes a W that runs later, oldest first."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.next: dict[tuple[int, str], int] = {}
        self.owed: list[Op] = []

    def _take(self, stage: int, what: str) -> int:
        mb = self.next.get((stage, what), 0)
        self.next[stage, what] = mb + 1
        return mb

    def forward(self, stage: int) -> Op:
        return Op(F, stage, self._take(stage, "F"))

    def backward(self, stage: int, split: bool = False) -> Op:
        op = Op(I if split else B, stage, self._take(stage, "B"))
        if split:
            self.owed.append(Op(W, stage, op.mb))
        return op

    def add(self, *ops: Op) -> None:
        self.ops += ops

    def pair(self, forward_stage: int, backward_stage: int) -> None:
        self.ops.append(Op.overlap(self.forward(forward_stage), self.backward(backward_stage)))

    def pay_weight(self) -> None:
        if self.owed:
            self.ops.append(self.owed.pop(0))


def _rank_ops(ranks: int, microbatches: int, rank: int) -> list[Op]:
    p, r = ranks, rank
    s0, s1 = r, 2 * p - 1 - r
    out = _Rank()
    for _ in range(2 * (p - r - 1)):
        out.add(out.forward(s0))
    for _ in range(r + 1):
        out.add(out.forward(s0))
        out.add(out.forward(s1))
    for _ in range(p - r - 1):
        out.add(out.backward(s1, split=True))
        out.pay_weight()
        out.add(out.forward(s1))
    for i in range(microbatches - 2 * p + r + 1):
        if i == 0 and r == p - 1:
            out.add(out.forward(s0))
            out.add(out.backward(s1))
        else:
            out.pair(s0, s1)
        out.pair(s1, s0)
    for _ in range(p - r - 1):
        out.add(out.backward(s1))
        out.pair(s1, s0)
    split = False
    for i in range(r + 1):
        split = split or (i == (r + 1) // 2 and r % 2 == 1)
        out.add(out.backward(s1, split))
        split = split or (i == (r + 1) // 2 and r % 2 == 0)
        out.add(out.backward(s0, split))
    for _ in range(p - r - 1):
        out.pay_weight()
        out.add(out.backward(s0, split))
    for _ in range(r + 1):
        out.pay_weight()
    return out.ops


@register("dualpipev", chunks_ok=lambda v: v == 2, rule="chunks must be 2 (the two arms of the V)",
          microbatches_ok=lambda p, m: m >= 2 * p, microbatch_rule="microbatches must be >= 2 * ranks (one per stage)",
          summary="DualPipeV (DeepSeek 2025, torch ScheduleDualPipeV): V placement, overlapped F&B pairs; "
                  "DualPipe's table bubble (p/2-1)(F&B+B-3W)")
def build_dualpipev(ranks: int, microbatches: int, chunks: int = 2) -> Schedule:
    ops = [_rank_ops(ranks, microbatches, rank) for rank in range(ranks)]
    stage_to_rank = tuple(s if s < ranks else 2 * ranks - 1 - s for s in range(2 * ranks))
    return Schedule("dualpipev", ranks, microbatches, 2 * ranks, stage_to_rank, ops)
