"""Processor sharing: ranks of one node that compute at once slow each other down.

A compute op is an amount of *work*, its cost alone (seconds at rate 1). While ``k``
ranks of its node compute at once it progresses at rate ``Costs.share[k - 1]``, and while
one of its rank's own transfers is in flight at ``1 - Costs.comm_interference`` of that.
Whenever either count changes, each op on the node whose rate changed is re-timed: the
work done since its last change comes off at the old rate, and its end is set again at the
new rate (the processor-sharing queue of Kleinrock, "Queueing Systems" vol. 2, 1976).

SimPy cannot move a timeout, so a re-timing makes a new one and the op remembers which of
its timeouts is current; an outdated one fires and is ignored. An op whose end falls at
this very instant is done: it is not re-timed by a rank starting at the same moment.
With a single rank computing and no transfer in flight the rate is 1.0 and an op ends at
``start + cost``, the same float as the model's fast path.
"""

from __future__ import annotations

import math
from functools import partial

import simpy

from .costs import Costs

__all__ = ["Sharing"]


class _Job:
    """One compute op in progress on a rank."""

    __slots__ = ("left", "rate", "since", "due", "timer", "done")

    def __init__(self, work: float, done: simpy.Event):
        self.left = work  # work not yet done at `since`
        self.rate = 0.0  # rate since `since` (0 until first timed)
        self.since = 0.0
        self.due = math.inf  # when the current timer fires
        self.timer: simpy.Event | None = None
        self.done = done


class Sharing:
    """Busy ranks per node and transfers in flight per rank; times compute ops under both."""

    def __init__(self, env: simpy.Environment, costs: Costs, num_ranks: int):
        self.env, self.costs = env, costs
        self.node = costs.nodes(num_ranks)
        self.members: dict[int, list[int]] = {}
        for rank, node in enumerate(self.node):
            self.members.setdefault(node, []).append(rank)
        self.busy = dict.fromkeys(self.members, 0)  # ranks computing, per node
        self.inflight = [0] * num_ranks  # the rank's own transfers in flight
        self.slow = 1.0 - costs.comm_interference
        self.jobs: list[_Job | None] = [None] * num_ranks

    def compute(self, rank: int, work: float) -> simpy.Event:
        """Start ``work`` seconds of compute on ``rank``; the event fires when it is done."""
        done = self.env.event()
        self.jobs[rank] = _Job(work, done)
        node = self.node[rank]
        self.busy[node] += 1
        self._retime_node(node)
        return done

    def transfer(self, src: int, dst: int, delta: int) -> None:
        """A transfer between ``src`` and ``dst`` starts (``delta`` 1) or ends (-1)."""
        for rank in (src, dst):
            self.inflight[rank] += delta
            if self.slow != 1.0:
                self._retime(rank)

    def _rate(self, rank: int) -> float:
        rate = self.costs.rate(self.busy[self.node[rank]])
        return rate * self.slow if self.inflight[rank] else rate

    def _retime_node(self, node: int) -> None:
        for rank in self.members[node]:
            self._retime(rank)

    def _retime(self, rank: int) -> None:
        job = self.jobs[rank]
        now = self.env.now
        if job is None or job.due <= now:
            return
        rate = self._rate(rank)
        if rate == job.rate:
            return
        job.left = max(job.left - (now - job.since) * job.rate, 0.0)
        job.since, job.rate = now, rate
        delay = job.left / rate
        job.due = now + delay  # the float SimPy schedules the timeout at
        job.timer = self.env.timeout(delay)
        job.timer.callbacks.append(partial(self._end, rank))

    def _end(self, rank: int, timer: simpy.Event) -> None:
        job = self.jobs[rank]
        if job is None or timer is not job.timer:
            return  # superseded by a later re-timing
        self.jobs[rank] = None
        node = self.node[rank]
        self.busy[node] -= 1
        self._retime_node(node)
        job.done.succeed()
