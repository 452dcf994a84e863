"""Dry run of a lowered schedule under a communication semantics, untimed or with op costs.

One pass over a worklist of ranks: a rank runs until it must wait for another rank,
and is woken when that rank posts what it waits for, so the whole run costs O(ops).
Communication is free here (the simulator models links); the times are those of a
unit- or per-kind-cost machine and serve the closed-form tests and the validator.

``async``: SEND records a post time; RECV completes at max(own clock, send's post).
``blocking``: a run of consecutive comm ops is posted together at the rank's clock;
the batch completes once every op in it has met its counterpart, at the latest post
time among them (rendezvous for sends too).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Mapping

from .ir import COMM_MODES, OpKind, Schedule, Transfer, batch_ends
from .lowered import Lowered

__all__ = ["DryRun", "Deadlock", "dry_run", "COMM_MODES"]


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


def dry_run(schedule: Schedule | Lowered, comm_mode: str | None = None,
            durations: Mapping[OpKind, float] | None = None) -> DryRun:
    """Run lowered lists (a Lowered's, under the ``comm_mode`` it was validated for, or a
    Schedule holding SEND/RECV, under ``comm_mode``, default async); raise :class:`Deadlock`
    if they cannot finish. A Lowered carries its semantics: a ``comm_mode`` beside one is
    refused (ValueError).

    ``durations`` gives a cost per compute kind (default 0: untimed); B defaults to I + W,
    an OVERLAP_F_B to F + B (no gain from overlapping: the simulator models that).
    Expects pairing and local order already checked (see :func:`schedules.validate`).
    """
    if isinstance(schedule, Lowered):
        if comm_mode is not None:
            raise ValueError(f"this Lowered runs under the comm_mode it was validated for ({schedule.comm_mode}); "
                             f"do not pass one beside it")
        schedule, comm_mode = schedule.program, schedule.comm_mode
    comm_mode = comm_mode or "async"
    if comm_mode not in COMM_MODES:
        raise ValueError(f"comm_mode must be one of {COMM_MODES}, got {comm_mode!r}")
    cost = {k: 0.0 for k in OpKind}
    if durations:
        cost.update(durations)
        if OpKind.B not in durations:
            cost[OpKind.B] = cost[OpKind.I] + cost[OpKind.W]
        if OpKind.OVERLAP_F_B not in durations:
            cost[OpKind.OVERLAP_F_B] = cost[OpKind.F] + cost[OpKind.B]
    run = _Run(schedule, comm_mode == "blocking", cost)
    run.run()
    return DryRun(schedule, run.start, run.end)


_COMPUTE, _SEND, _RECV = 0, 1, 2
_KIND = attrgetter("kind")
_CODE = {kind: _COMPUTE for kind in OpKind} | {
    OpKind.SEND_F: _SEND, OpKind.SEND_B: _SEND, OpKind.RECV_F: _RECV, OpKind.RECV_B: _RECV
}


class _Run:
    """The worklist interpreter; ops are pre-encoded as ints so the loop stays cheap."""

    def __init__(self, schedule: Schedule, blocking: bool, cost: Mapping[OpKind, float]):
        self.blocking = blocking
        ops = schedule.ops
        m, offset = Transfer.numbering(schedule.num_stages, schedule.num_microbatches)
        self.code = [list(map(_CODE.__getitem__, map(_KIND, rank_ops))) for rank_ops in ops]
        self.key = [[-1 if c == _COMPUTE else op.stage * m + op.mb + offset[op.kind] for op, c in zip(rank_ops, codes)]
                    for rank_ops, codes in zip(ops, self.code)]
        if any(cost.values()):
            self.cost = [list(map(cost.__getitem__, map(_KIND, rank_ops))) for rank_ops in ops]
        else:  # untimed: the validator's run
            self.cost = [[0.0] * len(rank_ops) for rank_ops in ops]
        self.ends = [batch_ends(rank_ops) for rank_ops in ops] if blocking else None
        p = schedule.num_ranks
        self.start = [[0.0] * len(r) for r in ops]
        self.end = [[0.0] * len(r) for r in ops]
        self.pc = [0] * p
        self.clock = [0.0] * p
        self.posted: dict[int, tuple[float, int]] = {}  # unmatched transfer -> (post time, rank)
        self.waiter: dict[int, int] = {}  # transfer -> rank blocked on it (async RECV)
        self.batch: list[list | None] = [None] * p  # blocking: [stop index, unmatched ops, latest match]
        self.ready = list(range(p))

    def run(self) -> None:
        while self.ready:
            self._advance(self.ready.pop())
        stuck = {r: i for r, i in enumerate(self.pc) if i < len(self.code[r])}
        if stuck:
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
        keys, i = self.key[rank], self.pc[rank]
        j = self.ends[rank][i]
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
