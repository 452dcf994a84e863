"""MPI tags of the pipeline's transfers, kept within the communicator's ``MPI.TAG_UB``.

A transfer is named by :class:`schedules.Transfer` (direction, source stage, mb),
identically on both sides. Its tag is ``channel * cycle + mb % cycle`` with
:meth:`~schedules.Transfer.channel` ``= direction * stages + stage`` (direction 0 forward,
1 backward): 2 · stages channels, one per stage boundary and direction, each cutting its microbatches into ``cycle`` residues. ``cycle``
is m when 2 · stages · m tags fit under TAG_UB (every transfer its own tag, as before);
otherwise the largest count that fits, so that microbatches mb and mb + cycle share a
tag. MPI matches messages of one (source, tag, communicator) in the order they were
posted (the non-overtaking rule), so shared tags are still matched correctly when the
sender posts the sends of each tag in the same order as the receiver posts their
receives; :meth:`TagPlan.check` proves that of a lowered schedule before anything runs.

MPICH's TAG_UB is 2^29 - 1; the standard guarantees only 32,767, which interleaved 1F1B
with p = 64, v = 2, m = 512 (2 · 128 · 512 = 131,072 transfers) would overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedules import Op, Transfer
from schedules.ir import is_send

__all__ = ["TagPlan"]


@dataclass(frozen=True)
class TagPlan:
    stages: int
    cycle: int
    """Microbatches per channel before tags repeat (m when every transfer has its own)."""

    @classmethod
    def fit(cls, stages: int, microbatches: int, tag_ub: int) -> "TagPlan":
        channels = 2 * stages
        if channels > tag_ub + 1:
            raise ValueError(f"{channels} transfer channels do not fit under MPI.TAG_UB = {tag_ub}")
        return cls(stages, max(1, min(microbatches, (tag_ub + 1) // channels)))

    def tag(self, transfer: Transfer) -> int:
        return transfer.channel(self.stages) * self.cycle + transfer.mb % self.cycle

    def check(self, ops: list[list[Op]] | tuple) -> None:
        """Raise ValueError unless every shared tag's sends and receives come in one order."""
        sent: dict[int, list[Transfer]] = {}
        received: dict[int, list[Transfer]] = {}
        for rank_ops in ops:
            for op in rank_ops:
                if op.kind.is_comm:
                    transfer = Transfer.of(op)
                    side = sent if is_send(op.kind) else received
                    side.setdefault(self.tag(transfer), []).append(transfer)
        for tag, transfers in sent.items():
            if received.get(tag, []) != transfers:
                raise ValueError(f"MPI tag {tag} is shared by transfers {transfers[:3]}... (TAG_UB is too small for "
                                 f"one tag per transfer), and they are received in another order than sent")
