"""Dry run of a lowered schedule under a communication semantics, untimed or with op costs.

One pass over a worklist of ranks: a rank runs until it must wait for another rank,
and is woken when that rank posts what it waits for, so the whole run costs O(ops).
Communication is free here (the simulator models links); the times are those of a
unit- or per-kind-cost machine and serve the closed-form tests and the validator.

``async``: SEND records a post time; RECV completes at max(own clock, send's post).
``blocking``: a run of consecutive comm ops is posted together at the rank's clock;
the batch completes once every op in it has met its counterpart, at the latest post
time among them (rendezvous for sends too).

With ``repair=True`` (used by the lowering pass, blocking only) a deadlock is mended
instead of reported: a rank stuck in a batch whose peer is stuck sending to it posts
that receive at once, in the batch where it is stuck (the RECV moves up its list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .ir import Op, OpKind, Schedule

__all__ = ["DryRun", "Deadlock", "dry_run", "COMMS"]

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


def repair_blocking(schedule: Schedule) -> tuple[list[list[Op]], bool]:
    """Per-rank lists with RECVs moved up where rendezvous would otherwise deadlock, and
    whether the blocking run then finished. One that deadlocks for other reasons (a
    RECV with no SEND, say) comes back as far as it was mended, for the validator to report.
    """
    run = _Run(schedule, [list(r) for r in schedule.ops], True, {k: 0.0 for k in OpKind}, repair=True)
    try:
        run.run()
    except Deadlock:
        return run.mended_ops(), False
    return run.mended_ops(), True


_COMPUTE, _SEND, _RECV = 0, 1, 2
_CODE = {kind: _COMPUTE for kind in OpKind} | {
    OpKind.SEND_F: _SEND, OpKind.SEND_B: _SEND, OpKind.RECV_F: _RECV, OpKind.RECV_B: _RECV
}


class _Run:
    """The worklist interpreter; ops are pre-encoded as ints so the loop stays cheap."""

    def __init__(self, schedule: Schedule, ops: list[list[Op]], blocking: bool, cost, repair: bool = False):
        self.schedule, self.ops, self.blocking, self.repair = schedule, ops, blocking, repair
        self.span = schedule.num_stages * max(schedule.num_microbatches, 1)
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
        # repair: RECVs posted early, by rank: index moved -> index of the op it now precedes
        self.moved: list[dict[int, int]] = [{} for _ in range(p)]
        self.recv_at: list[dict[int, int] | None] = [None] * p

    def _encode(self, rank_ops: list[Op], cost) -> tuple[list[int], list[int], list[float]]:
        """Transfer ('F'|'B', stage, mb) becomes the int (direction * stages + stage) * m + mb."""
        m, span = max(self.schedule.num_microbatches, 1), self.span
        # Key of a comm op = stage * m + mb + offset: a RECV_F names the transfer leaving
        # stage - 1, a RECV_B the one leaving stage + 1; backward transfers sit past `span`.
        offset = {OpKind.SEND_F: 0, OpKind.RECV_F: -m, OpKind.SEND_B: span, OpKind.RECV_B: span + m}
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
            if not (self.repair and self._mend()):
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
        moved = self.moved[rank]
        # [stop index, ops not yet matched, latest match time]; _post counts the unmatched.
        self.batch[rank] = [j, 0, self.clock[rank]]
        for k in range(i, j):
            if not (moved and k in moved):  # a moved RECV was posted (and matched) earlier
                self._post(rank, keys[k])
        if self.batch[rank] is not None and self.batch[rank][1] == 0:
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

    def _mend(self) -> bool:
        """Post early the RECV of every send that waits on a rank stuck in another batch."""
        where, m, span = self.schedule.stage_to_rank, max(self.schedule.num_microbatches, 1), self.span
        mended = False
        for key, (_, poster) in list(self.posted.items()):
            backward, rest = divmod(key, span)
            stage = rest // m  # the transfer leaves `stage`
            if key not in self.posted or poster != where[stage]:
                continue  # a posted RECV: its sender has not reached its SEND yet
            rank = where[stage - 1 if backward else stage + 1]
            if self.batch[rank] is None:
                continue
            if self.recv_at[rank] is None:
                code = self.code[rank]
                self.recv_at[rank] = {k: i for i, k in enumerate(self.key[rank]) if code[i] == _RECV}
            j = self.recv_at[rank].get(key)
            stop = self.batch[rank][0]
            if j is None or j < stop:
                continue
            self.moved[rank][j] = stop
            self._post(rank, key)
            if self.batch[rank] is not None and self.batch[rank][1] == 0:
                self._finish_batch(rank)
            mended = True
        return mended

    def mended_ops(self) -> list[list[Op]]:
        """Each rank's list with every early-posted RECV at the end of the batch that posted it."""
        out = []
        for rank_ops, moved in zip(self.ops, self.moved):
            # Sort positions: op i sits at 2i + 1; a RECV moved to precede op `stop` sits at
            # 2 * stop, and the stable sort keeps several such RECVs in their old order.
            place = list(range(1, 2 * len(rank_ops), 2))
            for j, stop in moved.items():
                place[j] = 2 * stop
            out.append([rank_ops[i] for i in sorted(range(len(rank_ops)), key=place.__getitem__)] if moved else rank_ops)
        return out
