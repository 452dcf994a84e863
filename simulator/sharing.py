"""Processor sharing: ranks of one node that compute at once slow each other down.

A compute op is an amount of *work*, its cost alone (seconds at rate 1). While ``k``
ranks of its node compute at once it progresses at rate ``Costs.share[k - 1]``, and while
one of its rank's own transfers is in flight at ``1 - Costs.comm_interference`` of that.
Whenever either count changes, each op whose rate changed has its remaining work re-timed
at the new rate (the processor-sharing queue of Kleinrock, "Queueing Systems" vol. 2, 1976).

Re-timing every op of a node at every change would cost a timeout per op and per
change. Instead each node keeps a *virtual clock*: the work a rank at full rate would have
done so far, advancing at ``share[k - 1]`` per second. An op that starts with ``w`` to do
ends when that clock reaches ``start + w`` (``start + w / (1 - comm_interference)`` while
its transfers fly, re-read when they start or end), so a change of k touches no op: it
only moves the node's one timer, set for the op that ends first (a heap). SimPy cannot
move a timeout, so the node remembers which of its timers is current; an outdated one
fires and is ignored. The clock restarts at 0 whenever the node falls idle.

A rank whose op ends is woken at that instant and, mostly, starts its next op at once.
Counting it idle in between would set a timer only to outdate it a moment later, an event
per op for nothing; so it is *held*: it counts as busy until its process either starts
the next op (:meth:`Sharing.compute`) or is about to wait (:meth:`Sharing.release`), both
before the clock moves on. Every change at one instant reads the same clock, so the last
one sets the timer counting it idle at once would have set. Under comm interference
transfers re-time running ops in the middle of an instant, where the order of timers
made at it can show in the last bits, so there a rank is counted idle at once.

A node's heap holds exactly its running ops: an op leaves it when it ends, and when
interference re-times it (a node has a few ranks, so taking one entry out is cheap), so
its head is the op that ends first with nothing outdated to skip.
"""

from __future__ import annotations

from functools import partial
from heapq import heapify, heappop, heappush

import simpy
from simpy import Event, Timeout

from .costs import Costs

__all__ = ["Sharing"]


class _Node:
    """The virtual clock of one node and the ops running on it."""

    __slots__ = ("busy", "rate", "clock", "since", "ends", "timer", "due", "tick")

    def __init__(self) -> None:
        self.busy = 0  # ranks computing
        self.rate = 1.0  # clock speed since `since`: share[busy - 1]
        self.clock = 0.0  # virtual time at `since`
        self.since = 0.0
        self.ends: list[tuple[float, int, int]] = []  # (virtual end, version, rank) of running ops: a heap
        self.timer: simpy.Event | None = None  # the current one; others are outdated
        self.due = 0.0  # when it fires
        self.tick = None  # its callback, made once

    def advance(self, now: float) -> None:
        """Bring the clock to ``now``. Twice at one instant changes nothing: the second adds 0."""
        if self.busy:
            self.clock += (now - self.since) * self.rate
        self.since = now


class Sharing:
    """Busy ranks per node and transfers in flight per rank; times compute ops under both."""

    def __init__(self, env: simpy.Environment, costs: Costs, num_ranks: int):
        self.env = env
        world = costs.node_numbers(num_ranks)  # world rank k * num_ranks + r is replica k's rank r
        self.node = [_Node() for _ in range(max(world) + 1)]
        for node in self.node:
            node.tick = partial(self._tick, node)
        self.of = [self.node[world[r]] for r in range(num_ranks)]  # the simulated replica's ranks
        counts: list[dict[int, int]] = [{} for _ in range(num_ranks)]
        for w, n in enumerate(world):  # every replica of rank r computes when r does
            counts[w % num_ranks][n] = counts[w % num_ranks].get(n, 0) + 1
        self.loads = [[(self.node[n], k) for n, k in c.items()] for c in counts]  # home (w = r) first
        self.away = [loads[1:] for loads in self.loads]  # the other nodes of the rank's replicas
        crowd = costs.crowd(num_ranks)
        self.rates = [costs.rate(k) for k in range(1, crowd + 1)]
        self.slow = 1.0 - costs.comm_interference
        self.interferes = costs.comm_interference > 0  # else transfers need not be followed
        self.inflight = [0] * num_ranks  # the rank's own transfers in flight
        self.end: list[float | None] = [None] * num_ranks  # virtual end of the rank's op, None: none running
        self.version = [0] * num_ranks  # orders ties in the heaps as when outdated entries stayed there
        self.done: list[simpy.Event | None] = [None] * num_ranks
        self.held = [False] * num_ranks  # op ended this instant, still counted busy

    def compute(self, rank: int, work: float) -> simpy.Event:
        """Start ``work`` seconds of compute on ``rank``; the event fires when it is done."""
        home, now = self.of[rank], self.env.now
        home.advance(now)
        done = self.done[rank] = Event(self.env)
        end = self.end[rank] = home.clock + (work / self.slow if self.inflight[rank] else work)
        version = self.version[rank] = self.version[rank] + 1
        heappush(home.ends, (end, version, rank))
        held, self.held[rank] = self.held[rank], False
        for node, count in self.loads[rank]:
            if node is not home:
                node.advance(now)
            if not held:  # a held rank was busy all along: only the ends moved
                node.busy += count
            self._reschedule(node, now)
        return done

    def release(self, rank: int) -> None:
        """``rank`` is about to wait for something other than its compute: stop counting it busy."""
        if self.held[rank]:
            self.held[rank] = False
            self._load(rank, -1)

    def _load(self, rank: int, sign: int) -> None:
        """``rank`` (and so each of its replicas) starts (1) or stops (-1) computing."""
        now = self.env.now
        for node, count in self.loads[rank]:
            node.advance(now)
            node.busy += sign * count
            self._reschedule(node, now)

    def transfer(self, src: int, dst: int, delta: int) -> None:
        """A transfer between ``src`` and ``dst`` starts (``delta`` 1) or ends (-1)."""
        for rank in (src, dst):
            before = self._factor(rank)
            self.inflight[rank] += delta
            after = self._factor(rank)
            end = self.end[rank]
            if after != before and end is not None:  # its op goes on at the other speed
                node, now = self.of[rank], self.env.now
                node.advance(now)
                node.ends.remove((end, self.version[rank], rank))
                heapify(node.ends)
                end = self.end[rank] = node.clock + (end - node.clock) * before / after
                self.version[rank] += 1
                heappush(node.ends, (end, self.version[rank], rank))
                self._reschedule(node, now)

    def _factor(self, rank: int) -> float:
        return self.slow if self.inflight[rank] else 1.0

    def _reschedule(self, node: _Node, now: float) -> None:
        if not node.ends:
            node.timer, node.clock = None, 0.0  # idle: restart the clock
            return
        rate = node.rate = self.rates[node.busy - 1]
        left = node.ends[0][0] - node.clock
        delay = (left if left > 0.0 else 0.0) / rate  # max(left, 0.0), which costs more than this line
        due = now + delay
        if node.timer is not None and due == node.due:
            return  # the first op still ends then (another op's end moved)
        node.due = due
        timer = node.timer = Timeout(self.env, delay)
        timer.callbacks.append(node.tick)

    def _tick(self, node: _Node, timer: simpy.Event) -> None:
        if timer is not node.timer:
            return  # outdated by a later change
        node.timer, now = None, node.due  # fired (the next change sets a new one) at its due: env.now
        node.advance(now)
        ends, end, ended = node.ends, self.end, []
        clock = node.clock = ends[0][0]  # the clock reads that op's end exactly now
        while ends and ends[0][0] <= clock:
            rank = heappop(ends)[2]
            end[rank] = None
            ended.append(rank)
        if not ends and not self.interferes:
            node.timer, node.clock = None, 0.0  # idle (the held ranks' other nodes: _hold)
        for rank in ended:
            if self.interferes:  # transfers re-time ops within an instant: keep the order of changes
                self._load(rank, -1)
            else:
                self._hold(rank, now)
            self.done[rank].succeed()
            self.done[rank] = None

    def _hold(self, rank: int, now: float) -> None:
        """``rank``'s op ended on its home node: keep it busy until it computes again or
        releases (this instant). Another node of its replicas left with no op to time
        restarts its clock now, as it would at once (home's tick sees to home)."""
        self.held[rank] = True
        for node, _ in self.away[rank]:
            node.advance(now)
            if not node.ends:
                node.timer, node.clock = None, 0.0
