"""The SimPy model: one process per rank walking its lowered op list.

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

Each directed link serves its transfers in posting order, one at a time, each holding
the link for ``latency + bytes / bandwidth``. Only the sender posts on its link, in its
own order, so under ``async`` a transfer's landing time is known when it is posted:
``max(posted, link free) + cost``, and it costs an event only if its receiver is already
waiting (the rank clock ``t`` then takes that exact float, whatever SimPy's sum of delays
rounds to). Where something must happen at a transfer's start and end (``blocking``'s
rendezvous, or compute slowed while transfers fly) a link is a FIFO queue whose head is
in flight, and a timeout whose callback delivers it and hands the link to the next. The
reduce stream works like the arithmetic links. Both give the floats a process per link
gave, bit for bit.

With ``Costs.shares_processors`` compute goes through :class:`simulator.sharing.Sharing`,
which re-times it as ranks of a node start and stop computing and transfers come and go;
where a node's ranks outnumber its ``Costs.cores``, through :class:`simulator.slicing.Slicing`,
which hands the cores out a slice at a time; otherwise a compute op is one timeout of its cost.
"""

from __future__ import annotations

from collections import deque
from functools import partial

import simpy

from schedules import Schedule
from schedules.ir import gc_paused

from .costs import Costs
from .encode import COMPUTE, RECV, REDUCE, SEND, encode
from .sharing import Sharing
from .slicing import Slicing

__all__ = ["Model"]


class _Link(deque):
    """One directed link's transfers in posting order; the head is in flight."""

    __slots__ = ("sent",)  # the callback for the head's timeout, made once per link


class Model:
    """Runs the final lists of one lowered schedule under ``costs`` and ``comm_mode``; times
    land in ``start``/``end``, the ranks that did not finish in ``stuck``."""

    def __init__(self, program: Schedule, costs: Costs, comm_mode: str):
        self.env = simpy.Environment()
        self.schedule, self.costs, self.blocking = program, costs, comm_mode == "blocking"
        self.num_ranks = program.num_ranks
        self.ops = encode(program, costs, self.blocking)
        self.code, self.key, self.cost, self.dest = self.ops.code, self.ops.key, self.ops.cost, self.ops.dest
        self.free = self.ops.free
        self.start = [[0.0] * len(codes) for codes in self.code]
        self.end = [[0.0] * len(codes) for codes in self.code]
        self.arrived: dict[int, float] = {}  # async: arrival of transfers sent before their RECV
        self.waiting: dict[int, simpy.Event] = {}  # async: RECVs waiting to be sent to, by transfer
        self.posted: dict[int, tuple[int, int]] = {}  # blocking: first side posted -> (rank, index)
        self.pending = [0] * program.num_ranks  # blocking: unfinished ops of the rank's batch
        self.batch_done: list[simpy.Event | None] = [None] * program.num_ranks
        self.reduce_free = [0.0] * program.num_ranks
        self.links: dict[tuple[int, int], _Link] = {}
        self.sharing = (Slicing(self.env, costs, program.num_ranks) if costs.time_sliced(program.num_ranks)
                        else Sharing(self.env, costs, program.num_ranks) if costs.shares_processors else None)
        self.interfering = self.sharing if self.sharing is not None and self.sharing.interferes else None
        self.fly = not self.blocking and self.interfering is None  # transfers timed by arithmetic
        self.link_free: dict[int, float] = {}  # fly: when link src -> dst is free, by src * ranks + dst
        self.step = [costs.optimizer(r, program.num_ranks) for r in range(program.num_ranks)]
        self.stepped = [0.0] * program.num_ranks  # when each rank's optimizer step starts
        self.finish = [0.0] * program.num_ranks  # when each rank's step ends (after the optimizer)
        self.at = [0] * program.num_ranks  # the op a rank last waited at for another rank
        self.stuck: dict[int, int] = {}  # after run(): rank -> op it stays stuck at

    def run(self) -> dict[int, int]:
        """Run to the end; :attr:`stuck`, which it also returns: rank -> index in
        ``program.ops[rank]`` of the op where it stays stuck (a RECV, or under blocking the
        first op of a batch), {} when all finished."""
        for rank in range(self.schedule.num_ranks):
            self.env.process(self._rank(rank))
        # An event per op is made and dropped soon after, freed by reference counting
        # (a processed event lets go of its callbacks); the cyclic collector would only
        # rescan the schedule's hundreds of thousands of ops (about 5-10% of the run).
        with gc_paused():
            self.env.run()
        stuck = [r for r in range(self.schedule.num_ranks) if self.finish[r] < 0]
        self.stuck = {r: self._origin(r, self.at[r]) for r in stuck}
        return self.stuck

    def _origin(self, rank: int, i: int) -> int:
        """The index in the rank's list of the op encoded at ``i`` (a pair is encoded as two)."""
        return [j for j, op in enumerate(self.schedule.ops[rank]) for _ in op.parts][i]

    # ---- the rank process -------------------------------------------------------------

    def _rank(self, rank: int):
        env, timeout, blocking, fly, sharing = self.env, self.env.timeout, self.blocking, self.fly, self.sharing
        code, key, cost, dest = self.code[rank], self.key[rank], self.cost[rank], self.dest[rank]
        start, end = self.start[rank], self.end[rank]
        arrived, link_free, links = self.arrived, self.link_free, rank * self.num_ranks
        self.finish[rank] = -1.0
        reduced = 0.0  # async: when the last of the rank's reductions is done
        t = 0.0  # the rank's clock: env.now, or exactly the arrival it waited for
        i, n = 0, len(code)
        # This loop runs once per op: `b if b > a else a` stands for max(a, b), which costs more.
        while i < n:
            c = code[i]
            start[i] = t
            if c == COMPUTE:
                if sharing is None:
                    yield timeout(cost[i])
                    t = end[i] = t + cost[i]
                else:
                    yield sharing.compute(rank, cost[i])
                    t = end[i] = env.now
            elif c == SEND and fly:
                # Only the sender posts on its link, in its own order, so the landing time
                # is known at once: no event unless the receiver already waits.
                link = links + dest[i]
                free = link_free.get(link, 0.0)
                land = link_free[link] = end[i] = (free if free > t else t) + cost[i]
                self._arrive(key[i], land)
            elif c == RECV and not blocking:
                arrival = arrived.pop(key[i], None)
                if arrival is None or arrival > env.now:  # not sent yet, or still in flight
                    arrival = yield from self._receive(rank, i, arrival)
                t = end[i] = arrival if arrival > t else t
            elif c == REDUCE:
                delay = self._reduce(rank, i, t)
                if blocking:
                    if sharing is not None:
                        sharing.release(rank)
                    yield timeout(delay)
                    t = env.now
                else:
                    reduced = max(reduced, t + delay)
            elif blocking:
                self.at[rank] = i
                i, done = self._post_batch(rank, i)
                if done is not None:
                    if sharing is not None:
                        sharing.release(rank)
                    yield done
                    t = env.now
                continue  # i is past the batch
            else:
                self._start_transfer(rank, i, -1, -1)
            i += 1
        yield from self._finish(rank, max(t, reduced), sharing)

    def _receive(self, rank: int, i: int, arrival: float | None):
        """async: RECV ``i`` waits for its transfer (``arrival`` None: not sent yet); its landing time."""
        if self.sharing is not None:
            self.sharing.release(rank)
        if arrival is None:
            wake = self.waiting[self.key[rank][i]] = self.env.event()
            self.at[rank] = i
            arrival = yield wake
        if arrival > self.env.now:
            yield self.env.timeout(arrival - self.env.now)
        return arrival

    def _finish(self, rank: int, t: float, sharing: Sharing | None):
        """After the last op and every reduction (due at ``t``): the optimizer step."""
        env, step = self.env, self.step[rank]
        if sharing is None:
            done = t + step  # alone the step takes exactly `step`
            if done > env.now:
                yield env.timeout(done - env.now)
            self.stepped[rank], self.finish[rank] = done - step, done
            return
        if t > env.now:
            sharing.release(rank)
            yield env.timeout(t - env.now)
        if step:
            yield sharing.compute(rank, step)
        sharing.release(rank)
        self.stepped[rank], self.finish[rank] = t, env.now

    def _reduce(self, rank: int, i: int, now: float) -> float:
        """Queue a reduction on the rank's reduce stream; the delay from ``now`` until it is done."""
        begin = max(now, self.reduce_free[rank])
        self.reduce_free[rank] = self.end[rank][i] = begin + self.cost[rank][i]
        self.start[rank][i] = now
        return self.reduce_free[rank] - now

    # ---- transfers ----------------------------------------------------------------------

    def _arrive(self, k: int, when: float) -> None:
        """Transfer ``k`` lands (or, posted, will land) at ``when``."""
        wake = self.waiting.pop(k, None)
        if wake is None:
            self.arrived[k] = when
        else:
            wake.succeed(when)

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
        dst = self.dest[rank][i]
        link = self.links.get((rank, dst))
        if link is None:
            link = self.links[rank, dst] = _Link()
            link.sent = partial(self._sent, link)
        link.append((rank, i, peer, j))
        if len(link) == 1:  # the link was idle
            self._send(link)

    def _send(self, link: _Link) -> None:
        """The transfer at the head of a link's queue takes the link."""
        rank, i, _, _ = link[0]
        if self.interfering is not None:
            self.interfering.transfer(rank, self.dest[rank][i], 1)
        self.env.timeout(self.cost[rank][i]).callbacks.append(link.sent)

    def _sent(self, link: _Link, _event: simpy.Event) -> None:
        rank, i, peer, j = link.popleft()
        if self.interfering is not None:
            self.interfering.transfer(rank, self.dest[rank][i], -1)
        self._complete(rank, i, peer, j)
        if link:
            self._send(link)

    def _complete(self, rank: int, i: int, peer: int, j: int) -> None:
        now = self.env.now
        self.end[rank][i] = now
        if not self.blocking:
            self._arrive(self.key[rank][i], now)
            return
        self.end[peer][j] = now
        for who in (rank, peer):
            self.pending[who] -= 1
            if self.pending[who] == 0 and self.batch_done[who] is not None:
                self.batch_done[who].succeed()
                self.batch_done[who] = None
