"""The SimPy model: one process per rank walking its lowered op list, one per busy link.

A rank process dispatches on the op kind, exactly the semantics of
:mod:`schedules.lowering` (and of the dry run :func:`schedules.dry_run`, which this
reproduces when communication is free):

* compute (F, B, I, W) holds the rank for its cost;
* ``async``: a SEND is posted and the rank goes on while the transfer runs on its link;
  a RECV waits until its transfer has arrived;
* ``blocking``: a run of consecutive SEND/RECV ops is posted as one batch and the rank
  waits for the whole batch; a transfer starts only once both its SEND and its RECV are
  posted (rendezvous), so a send also waits for its receiver;
* REDUCE_GRAD starts a ring all-reduce on the rank's reduce stream (one at a time per
  rank); ``async`` goes on and waits for every reduction before the optimizer step,
  ``blocking`` waits for it at once.

Each directed link is a process taking transfers from a FIFO store and holding the link
for ``latency + bytes / bandwidth`` each. With free communication no link process is
made: a transfer arrives the moment it starts.
"""

from __future__ import annotations

import simpy

from schedules import Schedule
from schedules.ir import gc_paused

from .costs import Costs
from .encode import COMPUTE, RECV, REDUCE, SEND, encode

__all__ = ["Model"]


class Model:
    """Runs one lowered schedule under ``costs`` and ``comm``; times land in ``start``/``end``."""

    def __init__(self, lowered: Schedule, costs: Costs, comm: str):
        self.env = simpy.Environment()
        self.schedule, self.costs, self.blocking = lowered, costs, comm == "blocking"
        self.ops = encode(lowered, costs)
        self.code, self.key, self.cost, self.dest = self.ops.code, self.ops.key, self.ops.cost, self.ops.dest
        self.free = self.ops.free
        self.start = [[0.0] * len(codes) for codes in self.code]
        self.end = [[0.0] * len(codes) for codes in self.code]
        self.arrived: set[int] = set()  # async: transfers delivered before their RECV
        self.waiting: dict[int, simpy.Event] = {}  # async: RECVs waiting, by transfer
        self.posted: dict[int, tuple[int, int]] = {}  # blocking: first side posted -> (rank, index)
        self.pending = [0] * lowered.num_ranks  # blocking: unfinished ops of the rank's batch
        self.batch_done: list[simpy.Event | None] = [None] * lowered.num_ranks
        self.reduce_free = [0.0] * lowered.num_ranks
        self.links: dict[tuple[int, int], simpy.Store] = {}
        self.finish = [0.0] * lowered.num_ranks  # when each rank's step ends (after the optimizer)

    def run(self) -> None:
        for rank in range(self.schedule.num_ranks):
            self.env.process(self._rank(rank))
        # An event per op is made and dropped soon after, freed by reference counting
        # (a processed event lets go of its callbacks); the cyclic collector would only
        # rescan the schedule's hundreds of thousands of ops (about 5-10% of the run).
        with gc_paused():
            self.env.run()
        stuck = [r for r in range(self.schedule.num_ranks) if self.finish[r] < 0]
        if stuck:  # the validator's dry run rules this out; guard against a model bug
            raise RuntimeError(f"simulation stopped with ranks {stuck} unfinished")

    # ---- the rank process -------------------------------------------------------------

    def _rank(self, rank: int):
        env, timeout, blocking = self.env, self.env.timeout, self.blocking
        code, key, cost = self.code[rank], self.key[rank], self.cost[rank]
        start, end = self.start[rank], self.end[rank]
        arrived, waiting = self.arrived, self.waiting
        self.finish[rank] = -1.0
        reductions: list[simpy.Event] = []
        t = 0.0  # env.now, kept locally: a timeout of d resumes at exactly t + d
        i, n = 0, len(code)
        while i < n:
            c = code[i]
            if c == COMPUTE:
                start[i] = t
                yield timeout(cost[i])
                t = end[i] = t + cost[i]
                i += 1
            elif c == REDUCE:
                done = self._reduce(rank, i)
                if blocking:
                    yield done
                    t = env.now
                else:
                    reductions.append(done)
                i += 1
            elif blocking:
                i, done = self._post_batch(rank, i)
                if done is not None:
                    yield done
                    t = env.now
            elif c == SEND:
                start[i] = t
                self._start_transfer(rank, i, -1, -1)
                i += 1
            else:
                start[i] = t
                k = key[i]
                if k in arrived:
                    arrived.remove(k)
                else:
                    wake = waiting[k] = env.event()
                    yield wake
                    t = env.now
                end[i] = t
                i += 1
        if reductions:
            yield env.all_of(reductions)
        if self.costs.optimizer_time:
            yield timeout(self.costs.optimizer_time)
        self.finish[rank] = env.now

    def _reduce(self, rank: int, i: int) -> simpy.Event:
        """Queue a reduction on the rank's reduce stream; the event fires when it is done."""
        now = self.env.now
        begin = max(now, self.reduce_free[rank])
        self.reduce_free[rank] = self.end[rank][i] = begin + self.cost[rank][i]
        self.start[rank][i] = now
        return self.env.timeout(self.reduce_free[rank] - now)

    # ---- transfers ----------------------------------------------------------------------

    def _arrive(self, k: int) -> None:
        wake = self.waiting.pop(k, None)
        if wake is None:
            self.arrived.add(k)
        else:
            wake.succeed()

    def _post_batch(self, rank: int, i: int) -> tuple[int, simpy.Event | None]:
        """blocking: post the run of comm ops from ``i`` on; the index after it, and an event
        to wait on unless every op in it completed at once."""
        now, key, code, posted = self.env.now, self.key[rank], self.code[rank], self.posted
        stop = self.ops.batch_end[rank][i]
        self.pending[rank] = stop - i
        for j in range(i, stop):
            self.start[rank][j] = now
            k = key[j]
            if k not in posted:
                posted[k] = (rank, j)
                continue
            other, o = posted.pop(k)
            if code[j] == SEND:
                self._start_transfer(rank, j, other, o)
            else:
                self._start_transfer(other, o, rank, j)
        if self.pending[rank] == 0:
            return stop, None
        done = self.batch_done[rank] = self.env.event()
        return stop, done

    def _start_transfer(self, rank: int, i: int, peer: int, j: int) -> None:
        """SEND ``i`` of ``rank`` starts (with, under blocking, RECV ``j`` of ``peer``)."""
        if self.free:
            self._complete(rank, i, peer, j)
            return
        link = (rank, self.dest[rank][i])
        if link not in self.links:
            self.links[link] = simpy.Store(self.env)
            self.env.process(self._link(self.links[link]))
        self.links[link].put((rank, i, peer, j))

    def _link(self, queue: simpy.Store):
        """One directed link: transfers in posting order, one at a time."""
        while True:
            rank, i, peer, j = yield queue.get()
            yield self.env.timeout(self.cost[rank][i])
            self._complete(rank, i, peer, j)

    def _complete(self, rank: int, i: int, peer: int, j: int) -> None:
        now = self.env.now
        self.end[rank][i] = now
        if not self.blocking:
            self._arrive(self.key[rank][i])
            return
        self.end[peer][j] = now
        for who in (rank, peer):
            self.pending[who] -= 1
            if self.pending[who] == 0 and self.batch_done[who] is not None:
                self.batch_done[who].succeed()
                self.batch_done[who] = None
