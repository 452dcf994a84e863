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
"""

from __future__ import annotations

import heapq
from functools import partial

import simpy

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
        self.ends: list[tuple[float, int, int]] = []  # (virtual end, version, rank): a heap
        self.timer: simpy.Event | None = None  # the current one; others are outdated
        self.due = 0.0  # when it fires
        self.tick = None  # its callback, made once


class Sharing:
    """Busy ranks per node and transfers in flight per rank; times compute ops under both."""

    def __init__(self, env: simpy.Environment, costs: Costs, num_ranks: int):
        self.env = env
        world = costs.nodes(num_ranks)  # world rank k * num_ranks + r is replica k's rank r
        self.node = [_Node() for _ in range(max(world) + 1)]
        for node in self.node:
            node.tick = partial(self._tick, node)
        self.of = [self.node[world[r]] for r in range(num_ranks)]  # the simulated replica's ranks
        counts: list[dict[int, int]] = [{} for _ in range(num_ranks)]
        for w, n in enumerate(world):  # every replica of rank r computes when r does
            counts[w % num_ranks][n] = counts[w % num_ranks].get(n, 0) + 1
        self.loads = [[(self.node[n], k) for n, k in c.items()] for c in counts]
        crowd = max(world.count(n) for n in set(world))
        self.rates = [costs.rate(k) for k in range(1, crowd + 1)]
        self.slow = 1.0 - costs.comm_interference
        self.interferes = costs.comm_interference > 0  # else transfers need not be followed
        self.inflight = [0] * num_ranks  # the rank's own transfers in flight
        self.end: list[float | None] = [None] * num_ranks  # virtual end of the rank's op
        self.version = [0] * num_ranks  # tells a heap entry of the rank's current op from old ones
        self.done: list[simpy.Event | None] = [None] * num_ranks
        self.held = [False] * num_ranks  # op ended this instant, still counted busy

    def compute(self, rank: int, work: float) -> simpy.Event:
        """Start ``work`` seconds of compute on ``rank``; the event fires when it is done."""
        home = self.of[rank]
        self._advance(home)
        done = self.done[rank] = self.env.event()
        self._place(rank, home, home.clock + work / self._factor(rank))
        if not self.held[rank]:
            self._load(rank, 1)
            return done
        self.held[rank] = False  # busy all along: only the ends moved
        for node, _ in self.loads[rank]:
            if node is not home:
                self._advance(node)
            self._reschedule(node)
        return done

    def release(self, rank: int) -> None:
        """``rank`` is about to wait for something other than its compute: stop counting it busy."""
        if self.held[rank]:
            self.held[rank] = False
            self._load(rank, -1)

    def _hold(self, rank: int, ticked: _Node) -> None:
        """``rank``'s op ended on node ``ticked``: keep it busy until it computes again or
        releases (this instant). A node left with no op to time restarts its clock now, as
        it would at once."""
        self.held[rank] = True
        for node, _ in self.loads[rank]:
            if node is not ticked:  # that one is advanced, and its head known, by the tick
                self._advance(node)
                if self._head(node) is None:
                    node.timer, node.clock = None, 0.0

    def _load(self, rank: int, sign: int) -> None:
        """``rank`` (and so each of its replicas) starts (1) or stops (-1) computing."""
        for node, count in self.loads[rank]:
            self._advance(node)
            node.busy += sign * count
            self._reschedule(node)

    def transfer(self, src: int, dst: int, delta: int) -> None:
        """A transfer between ``src`` and ``dst`` starts (``delta`` 1) or ends (-1)."""
        for rank in (src, dst):
            before = self._factor(rank)
            self.inflight[rank] += delta
            after = self._factor(rank)
            end = self.end[rank]
            if after != before and end is not None:  # its op goes on at the other speed
                node = self.of[rank]
                self._advance(node)
                self._place(rank, node, node.clock + (end - node.clock) * before / after)
                self._reschedule(node)

    def _factor(self, rank: int) -> float:
        return self.slow if self.inflight[rank] else 1.0

    def _place(self, rank: int, node: _Node, end: float) -> None:
        self.end[rank] = end
        self.version[rank] += 1
        heapq.heappush(node.ends, (end, self.version[rank], rank))

    def _advance(self, node: _Node) -> None:
        now = self.env.now
        if node.busy:
            node.clock += (now - node.since) * node.rate
        node.since = now

    def _head(self, node: _Node) -> tuple[float, int, int] | None:
        """The op that ends first, dropping entries of ops since re-placed or done."""
        ends, version, end = node.ends, self.version, self.end
        while ends:
            top = ends[0]
            if top[1] == version[top[2]] and end[top[2]] is not None:
                return top
            heapq.heappop(ends)
        return None

    def _reschedule(self, node: _Node) -> None:
        head = self._head(node)
        if head is None:
            node.timer, node.clock = None, 0.0  # idle: restart the clock
            return
        rate = node.rate = self.rates[node.busy - 1]
        delay = max(head[0] - node.clock, 0.0) / rate
        due = self.env.now + delay
        if node.timer is not None and due == node.due:
            return  # the first op still ends then (another op's end moved)
        node.due = due
        timer = node.timer = self.env.timeout(delay)
        timer.callbacks.append(node.tick)

    def _tick(self, node: _Node, timer: simpy.Event) -> None:
        if timer is not node.timer:
            return  # outdated by a later change
        node.timer = None  # fired: the next change sets a new one
        self._advance(node)
        head = self._head(node)
        clock = node.clock = head[0]  # the clock reads that op's end exactly now
        ended, end = [], self.end
        while head is not None and head[0] <= clock:
            ended.append(head[2])
            end[head[2]] = None
            head = self._head(node)
        if head is None and not self.interferes:
            node.timer, node.clock = None, 0.0  # idle (the held ranks' other nodes: _hold)
        for rank in ended:
            if self.interferes:  # transfers re-time ops within an instant: keep the order of changes
                self._load(rank, -1)
            else:
                self._hold(rank, node)
            self.done[rank].succeed()
            self.done[rank] = None
