"""Where the transfers of a compute-only schedule meet under ``blocking``: the lowering
pass's planner.

:func:`plan_blocking` is a unit-cost run (t_f = t_i = t_w, B = I + W) of the compute ops
alone that decides in which gap between compute ops each transfer is posted on either
side; :mod:`schedules.lowering` states the rule, and why the list it yields cannot
deadlock and is as fast as async at unit costs.
"""

from __future__ import annotations

from typing import Sequence

from .ir import Op, OpKind, Schedule, Transfer

__all__ = ["plan_blocking"]


def plan_blocking(
    schedule: Schedule, recvs: Sequence[Sequence[tuple[Op, ...]]], sends: Sequence[Sequence[tuple[Op, ...]]]
) -> tuple[list[list[int]], list[list[int]]] | None:
    """The gaps in which the transfers of a compute-only ``schedule`` meet under ``blocking``.

    ``recvs[r][i]`` are the RECVs that op ``i`` of rank ``r`` needs before it runs, ``sends[r][i]``
    the SENDs that carry its outputs away (one each at most, two for an OVERLAP_F_B).
    Returns ``(recv_gap, send_gap)``: per rank, the gap where each of its RECVs (SENDs), in
    op order, is posted, gap ``g`` being the one just before compute op ``g`` (``len`` =
    after the last op). None if the run cannot finish: the compute order alone has a
    cyclic wait (no placement of comm ops mends that; the validator reports it), or a
    transfer lacks an end.
    """
    meet = _Meet(schedule, recvs, sends)
    return (meet.recv_gap, meet.send_gap) if meet.run() else None


_UNIT_COST = {OpKind.F: 1, OpKind.I: 1, OpKind.W: 1, OpKind.B: 2, OpKind.OVERLAP_F_B: 3}  # t_f = t_i = t_w


class _Meet:
    """The unit-cost run behind :func:`plan_blocking`. Between two compute ops a rank stands
    *at a gap*: it passes through when its next op's inputs are there, else it waits (as it
    does for good at the end of its list). A produced transfer is posted, on both sides, in
    the gaps its ranks stand at the first instant both stand at one and one of them waits.
    Every time is an integer, so the run steps through one bucket of ranks per instant."""

    def __init__(self, schedule: Schedule, recvs, sends):
        m, offset = Transfer.numbering(schedule.num_stages, schedule.num_microbatches)

        def keys(comm_ops) -> tuple[list[tuple[tuple[int, int], ...]], int]:
            """Per op, (transfer, index among the rank's RECVs or SENDs) of each; the count."""
            out: list[tuple[tuple[int, int], ...]] = []
            append, j = out.append, 0
            for group in comm_ops:
                if not group:  # most ops: no transfer
                    append(())
                    continue
                append(tuple((op.stage * m + op.mb + offset[op.kind], j + k) for k, op in enumerate(group)))
                j += len(group)
            return out, j

        p = schedule.num_ranks
        self.n = [len(rank_ops) for rank_ops in schedule.ops]
        self.cost = [[_UNIT_COST.get(op.kind, 1) for op in rank_ops] for rank_ops in schedule.ops]
        need, out = [keys(r) for r in recvs], [keys(r) for r in sends]
        self.need = [[tuple(key for key, _ in group) for group in row] for row, _ in need]
        self.out = [row for row, _ in out]
        # transfer -> (receiving rank, index among its RECVs)
        self.consumer = {key: (rank, j) for rank, (row, _) in enumerate(need) for group in row for key, j in group}
        produced = [key for row in self.out for group in row for key, _ in group]
        # One SEND and one RECV per transfer, else the validator has a rule to report.
        needed = sum(count for _, count in need)
        self.complete = len(produced) == len(self.consumer) == needed and self.consumer.keys() == set(produced)
        partners: list[set[int]] = [set() for _ in range(p)]  # ranks a rank exchanges with
        for rank, row in enumerate(self.out):
            for peer in {self.consumer[key][0] for group in row for key, _ in group if key in self.consumer}:
                partners[rank].add(peer)
                partners[peer].add(rank)
        self.partners = [tuple(peers) for peers in partners]
        # sender -> receiver -> [(transfer, index among the sender's SENDs)]: produced, not yet posted
        self.pending: list[dict[int, list[tuple[int, int]]]] = [{} for _ in range(p)]
        self.recv_gap = [[-1] * count for _, count in need]
        self.send_gap = [[-1] * count for _, count in out]
        self.pc = [0] * p  # the op a rank runs, or the gap it stands at
        self.at_gap = [True] * p
        self.waiting = [True] * p  # of the ranks at a gap: does it stay there?
        self.arrived: set[int] = set()  # transfers posted (and so met)

    def run(self) -> bool:
        if not self.complete:
            return False
        at_gap, waiting, partners, pending = self.at_gap, self.waiting, self.partners, self.pending
        due: dict[int, list[int]] = {}  # instant -> ranks that finish an op then
        self._leave(range(len(self.n)), 0, due)
        t = 0
        while due:
            while t not in due:
                t += 1
            arrivals = due.pop(t)
            for rank in arrivals:
                self._arrive(rank)
            woken: list[int] = []
            for rank in arrivals:  # only now that every arrival stands at its gap
                for peer in partners[rank]:
                    if at_gap[peer] and (waiting[rank] or waiting[peer]):
                        if pending[rank].get(peer):
                            self._post(rank, peer, woken)
                        if pending[peer].get(rank):
                            self._post(peer, rank, woken)
            self._leave(arrivals + woken, t, due)
        return self.pc == self.n and len(self.arrived) == len(self.consumer)

    def _arrive(self, rank: int) -> None:
        i = self.pc[rank]
        self.pc[rank] = i + 1
        self.at_gap[rank] = True
        for key, j in self.out[rank][i]:
            self.pending[rank].setdefault(self.consumer[key][0], []).append((key, j))
        # Whether it waits is settled before this instant's meetings: a rank that only
        # passes through meets no one who passes through too.
        if i + 1 == self.n[rank]:
            self.waiting[rank] = True
        else:
            self.waiting[rank] = not self.arrived.issuperset(self.need[rank][i + 1])

    def _post(self, sender: int, receiver: int, woken: list[int]) -> None:
        """Post, in the gaps both stand at, every transfer ``sender`` holds for ``receiver``."""
        held = self.pending[sender][receiver]
        send_gap, recv_gap, consumer = self.send_gap[sender], self.recv_gap[receiver], self.consumer
        at_sender, at_receiver = self.pc[sender], self.pc[receiver]
        for key, j in held:
            send_gap[j] = at_sender
            recv_gap[consumer[key][1]] = at_receiver
            self.arrived.add(key)
        held.clear()
        woken.append(receiver)

    def _leave(self, ranks, t: int, due: dict[int, list[int]]) -> None:
        """Start the next op of each of ``ranks`` that stands at a gap with its inputs there."""
        pc, n, need, at_gap, arrived = self.pc, self.n, self.need, self.at_gap, self.arrived
        for rank in ranks:
            i = pc[rank]
            if not at_gap[rank] or i == n[rank]:
                continue
            if not arrived.issuperset(need[rank][i]):
                continue
            at_gap[rank] = False
            due.setdefault(t + self.cost[rank][i], []).append(rank)
