"""Dry run of a lowered schedule under a communication semantics, untimed or with op costs.

One pass over a worklist of ranks: a rank runs until it must wait for another rank,
and is woken when that rank posts what it waits for, so the whole run costs O(ops).
Communication is free here (the simulator models links); the times are those of a
unit- or per-kind-cost machine and serve the closed-form tests and the validator.

``async``: SEND records a post time; RECV completes at max(own clock, send's post).
``blocking``: a run of consecutive comm ops is posted together at the rank's clock;
the batch completes once every op in it has met its counterpart, at the latest post
time among them (rendezvous for sends too).

:func:`plan_blocking` is the lowering pass's tool for ``blocking``: a unit-cost run of
a compute-only schedule that decides in which gap between compute ops each transfer is
posted on either side (see :mod:`schedules.lowering` for the rule and why it holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .ir import Op, OpKind, Schedule

__all__ = ["DryRun", "Deadlock", "dry_run", "plan_blocking", "COMMS"]

COMMS = ("async", "blocking")


@dataclass
class DryRun:
    """Start and end time of every op, ``start[rank][i]`` for ``schedule.ops[rank][i]``."""

    schedule: Schedule
    start: list[list[float]]
    end: list[list[float]]

    @property
    def makespan(self) -> float:
        return max((ends[-1] for ends in self.end if ends), default=0.0)


class Deadlock(Exception):
    """No rank can move: ``stuck`` maps rank -> index of the op it waits at."""

    def __init__(self, stuck: dict[int, int]):
        super().__init__(stuck)
        self.stuck = stuck


def dry_run(schedule: Schedule, comm: str = "async", durations: Mapping[OpKind, float] | None = None) -> DryRun:
    """Run a lowered schedule; raise :class:`Deadlock` if it cannot finish.

    ``durations`` gives a cost per compute kind (default 0: untimed); B defaults to I + W.
    Expects pairing and local order already checked (see :func:`schedules.validate`).
    """
    if comm not in COMMS:
        raise ValueError(f"comm must be one of {COMMS}, got {comm!r}")
    cost = {k: 0.0 for k in OpKind}
    if durations:
        cost.update(durations)
        if OpKind.B not in durations:
            cost[OpKind.B] = cost[OpKind.I] + cost[OpKind.W]
    run = _Run(schedule, [list(r) for r in schedule.ops], comm == "blocking", cost)
    run.run()
    return DryRun(schedule, run.start, run.end)


def _transfer_offsets(schedule: Schedule) -> tuple[int, dict[OpKind, int]]:
    """Transfer ('F'|'B', stage, mb) as the int (direction * stages + stage) * m + mb: the key
    of a comm op is stage * m + mb + offset[kind], since a RECV_F names the transfer leaving
    stage - 1 and a RECV_B the one leaving stage + 1; backward transfers sit past stages * m."""
    m = max(schedule.num_microbatches, 1)
    span = schedule.num_stages * m
    return m, {OpKind.SEND_F: 0, OpKind.RECV_F: -m, OpKind.SEND_B: span, OpKind.RECV_B: span + m}


_COMPUTE, _SEND, _RECV = 0, 1, 2
_CODE = {kind: _COMPUTE for kind in OpKind} | {
    OpKind.SEND_F: _SEND, OpKind.SEND_B: _SEND, OpKind.RECV_F: _RECV, OpKind.RECV_B: _RECV
}


class _Run:
    """The worklist interpreter; ops are pre-encoded as ints so the loop stays cheap."""

    def __init__(self, schedule: Schedule, ops: list[list[Op]], blocking: bool, cost):
        self.schedule, self.ops, self.blocking = schedule, ops, blocking
        self.code, self.key, self.cost = zip(*(self._encode(r, cost) for r in ops)) if ops else ((), (), ())
        self.code, self.key, self.cost = list(self.code), list(self.key), list(self.cost)
        p = schedule.num_ranks
        self.start = [[0.0] * len(r) for r in ops]
        self.end = [[0.0] * len(r) for r in ops]
        self.pc = [0] * p
        self.clock = [0.0] * p
        self.posted: dict[int, tuple[float, int]] = {}  # unmatched transfer -> (post time, rank)
        self.waiter: dict[int, int] = {}  # transfer -> rank blocked on it (async RECV)
        self.batch: list[list | None] = [None] * p  # blocking: [stop index, unmatched ops, latest match]
        self.ready = list(range(p))

    def _encode(self, rank_ops: list[Op], cost) -> tuple[list[int], list[int], list[float]]:
        m, offset = _transfer_offsets(self.schedule)
        codes = [_CODE[op.kind] for op in rank_ops]
        keys = [op.stage * m + op.mb + offset[op.kind] if c != _COMPUTE else -1 for op, c in zip(rank_ops, codes)]
        return codes, keys, [cost[op.kind] for op in rank_ops]

    def run(self) -> None:
        while True:
            while self.ready:
                self._advance(self.ready.pop())
            stuck = {r: self.pc[r] for r in range(self.schedule.num_ranks) if self.pc[r] < len(self.ops[r])}
            if not stuck:
                return
            raise Deadlock(stuck)

    def _advance(self, rank: int) -> None:
        code, keys, cost = self.code[rank], self.key[rank], self.cost[rank]
        start, end, posted = self.start[rank], self.end[rank], self.posted
        i, t, n = self.pc[rank], self.clock[rank], len(code)
        while i < n:
            c = code[i]
            if c == _COMPUTE:
                start[i] = t
                t += cost[i]
                end[i] = t
                i += 1
            elif self.blocking:
                self.pc[rank], self.clock[rank] = i, t
                self._post_batch(rank)
                return
            elif c == _SEND:
                start[i] = end[i] = t
                key = keys[i]
                posted[key] = (t, rank)
                if key in self.waiter:
                    self.ready.append(self.waiter.pop(key))
                i += 1
            else:
                key = keys[i]
                if key not in posted:
                    self.waiter[key] = rank
                    break
                start[i] = t
                t = max(t, posted.pop(key)[0])
                end[i] = t
                i += 1
        self.pc[rank], self.clock[rank] = i, t

    def _post_batch(self, rank: int) -> None:
        code, keys, i = self.code[rank], self.key[rank], self.pc[rank]
        j = i
        while j < len(code) and code[j] != _COMPUTE:
            j += 1
        # [stop index, ops not yet matched, latest match time]; _post counts the unmatched.
        self.batch[rank] = [j, 0, self.clock[rank]]
        for k in range(i, j):
            self._post(rank, keys[k])
        if self.batch[rank][1] == 0:
            self._finish_batch(rank)

    def _post(self, rank: int, key: int) -> None:
        """Post one op of ``rank``'s open batch, matching it if its counterpart waits."""
        t, batch = self.clock[rank], self.batch[rank]
        counterpart = self.posted.pop(key, None)
        if counterpart is None:
            self.posted[key] = (t, rank)
            batch[1] += 1
            return
        when, other = counterpart  # `other` is never `rank`: no comm within a rank
        # Rendezvous: both complete at the later post; each batch's clock already covers
        # its own post time.
        if when > batch[2]:
            batch[2] = when
        theirs = self.batch[other]
        if t > theirs[2]:
            theirs[2] = t
        theirs[1] -= 1
        if theirs[1] == 0:
            self._finish_batch(other)

    def _finish_batch(self, rank: int) -> None:
        stop, _, t = self.batch[rank]
        i = self.pc[rank]
        self.start[rank][i:stop] = [self.clock[rank]] * (stop - i)
        self.end[rank][i:stop] = [t] * (stop - i)
        self.pc[rank], self.clock[rank], self.batch[rank] = stop, t, None
        self.ready.append(rank)


def plan_blocking(
    schedule: Schedule, recvs: Sequence[Sequence[Op | None]], sends: Sequence[Sequence[Op | None]]
) -> tuple[list[list[int]], list[list[int]]] | None:
    """The gaps in which the transfers of a compute-only ``schedule`` meet under ``blocking``.

    ``recvs[r][i]`` is the RECV that op ``i`` of rank ``r`` needs before it runs, ``sends[r][i]``
    the SEND that carries its output away (None where there is none). Returns ``(recv_gap,
    send_gap)``: per rank and op, the gap where that RECV (SEND) is posted, gap ``g`` being
    the one just before compute op ``g`` (``len`` = after the last op), -1 where there is
    none. None if the run cannot finish: the compute order alone has a cyclic wait (no
    placement of comm ops mends that; the validator reports it), or a transfer lacks an end.
    """
    meet = _Meet(schedule, recvs, sends)
    return (meet.recv_gap, meet.send_gap) if meet.run() else None


_UNIT_COST = {OpKind.F: 1, OpKind.I: 1, OpKind.W: 1, OpKind.B: 2}  # t_f = t_i = t_w; B = I + W


class _Meet:
    """The unit-cost run behind :func:`plan_blocking`. Between two compute ops a rank stands
    *at a gap*: it passes through when its next op's input is there, else it waits (as it
    does for good at the end of its list). A produced transfer is posted, on both sides, in
    the gaps its ranks stand at the first instant both stand at one and one of them waits.
    Every time is an integer, so the run steps through one bucket of ranks per instant."""

    def __init__(self, schedule: Schedule, recvs, sends):
        m, offset = _transfer_offsets(schedule)

        def keys(comm_ops) -> list[int]:  # the transfer of each op, -1 for none
            return [-1 if op is None else op.stage * m + op.mb + offset[op.kind] for op in comm_ops]

        p = schedule.num_ranks
        self.n = [len(rank_ops) for rank_ops in schedule.ops]
        self.cost = [[_UNIT_COST.get(op.kind, 1) for op in rank_ops] for rank_ops in schedule.ops]
        self.need, self.out = [keys(r) for r in recvs], [keys(r) for r in sends]
        self.consumer = {key: (rank, i) for rank, row in enumerate(self.need) for i, key in enumerate(row) if key >= 0}
        produced = [key for row in self.out for key in row if key >= 0]
        # One SEND and one RECV per transfer, else the validator has a rule to report.
        needed = sum(key >= 0 for row in self.need for key in row)
        self.complete = len(produced) == len(self.consumer) == needed and self.consumer.keys() == set(produced)
        partners: list[set[int]] = [set() for _ in range(p)]  # ranks a rank exchanges with
        for rank, row in enumerate(self.out):
            for peer in {self.consumer[key][0] for key in row if key in self.consumer}:
                partners[rank].add(peer)
                partners[peer].add(rank)
        self.partners = [tuple(peers) for peers in partners]
        # sender -> receiver -> [(transfer, producing op)]: produced, not yet posted
        self.pending: list[dict[int, list[tuple[int, int]]]] = [{} for _ in range(p)]
        self.recv_gap = [[-1] * n for n in self.n]
        self.send_gap = [[-1] * n for n in self.n]
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
        key = self.out[rank][i]
        if key >= 0:
            self.pending[rank].setdefault(self.consumer[key][0], []).append((key, i))
        # Whether it waits is settled before this instant's meetings: a rank that only
        # passes through meets no one who passes through too.
        if i + 1 == self.n[rank]:
            self.waiting[rank] = True
        else:
            need = self.need[rank][i + 1]
            self.waiting[rank] = need >= 0 and need not in self.arrived

    def _post(self, sender: int, receiver: int, woken: list[int]) -> None:
        """Post, in the gaps both stand at, every transfer ``sender`` holds for ``receiver``."""
        held = self.pending[sender][receiver]
        send_gap, recv_gap, consumer = self.send_gap[sender], self.recv_gap[receiver], self.consumer
        at_sender, at_receiver = self.pc[sender], self.pc[receiver]
        for key, i in held:
            send_gap[i] = at_sender
            recv_gap[consumer[key][1]] = at_receiver
            self.arrived.add(key)
        held.clear()
        woken.append(receiver)

    def _leave(self, ranks, t: int, due: dict[int, list[int]]) -> None:
        """Start the next op of each of ``ranks`` that stands at a gap with its input there."""
        pc, n, need, at_gap, arrived = self.pc, self.n, self.need, self.at_gap, self.arrived
        for rank in ranks:
            i = pc[rank]
            if not at_gap[rank] or i == n[rank]:
                continue
            key = need[rank][i]
            if key >= 0 and key not in arrived:
                continue
            at_gap[rank] = False
            due.setdefault(t + self.cost[rank][i], []).append(rank)
