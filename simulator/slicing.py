"""Time-sliced cores: ranks of a node that outnumber its cores take turns on them.

Fluid processor sharing (:mod:`simulator.sharing`) slows every computing rank of a node
alike and at once. An operating system does not: a node with ``cores`` cores runs at
most that many ranks at a time, each for a slice of the scheduler's (``Costs.slice_s``,
measured by the profile: the runs of a busy rank between its waits for a core when the
ranks outnumber the cores), and a rank that becomes ready while every core is taken
waits its turn. The model here (round robin, Kleinrock's "Queueing Systems" vol. 2):

* a rank that starts an op takes a free core at once, or joins the node's queue;
* a running rank keeps its core until its op ends, or until its slice ends while
  another rank queues: then it goes to the back of the queue and the head takes the core
  (as many ranks give way as were waiting, those whose slices ran out first);
* a running op advances at the node's per-core rate, ``share[n - 1] * n / min(n, cores)``
  with ``n`` ranks ready (running or queued): the profile's ``share`` is the per-rank
  throughput of ``n`` ranks computing at once, so this keeps the node's throughput what
  the profile measured (context switches and the waiting ranks' polls included) while
  handing it out in slices rather than evenly (without a ``share``, 1).

As the slice shrinks to nothing this becomes fluid sharing (a test checks it). Replicas
of a rank (``dp`` > 1) placed on a node compute whenever their rank does: each adds a
task of the same work to its node's queue, which takes its turns but wakes nobody.
Compute slowed by a rank's own transfers (``comm_interference``) is not modelled here.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from itertools import count

import simpy
from simpy import Event, Timeout

from .costs import Costs

__all__ = ["Slicing"]


class _Node:
    """One node's cores: the running tasks (work left, end of slice) and the queue."""

    __slots__ = ("cores", "running", "queue", "left", "since", "rate", "timer", "tick")

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self.running: dict[int, float] = {}  # task -> when its slice ends
        self.queue: deque[int] = deque()
        self.left: dict[int, float] = {}  # task -> work left at `since` (running or queued)
        self.since = 0.0
        self.rate = 1.0  # work per second of a running task since `since`
        self.timer: simpy.Event | None = None
        self.tick = None


class Slicing:
    """The same interface as :class:`simulator.sharing.Sharing`, with cores taken in turns."""

    interferes = False

    def __init__(self, env: simpy.Environment, costs: Costs, num_ranks: int):
        self.env = env
        self.slice = costs.slice_s
        world = costs.node_numbers(num_ranks)
        self.node = [_Node(costs.cores) for _ in range(max(world) + 1)]
        for node in self.node:
            node.tick = partial(self._tick, node)
        crowd = costs.crowd(num_ranks)
        self.rates = [costs.rate(n) * n / min(n, costs.cores) if costs.share else 1.0 for n in range(1, crowd + 1)]
        loads: list[dict[int, int]] = [{} for _ in range(num_ranks)]
        for w, n in enumerate(world):  # world rank k * num_ranks + r is replica k's rank r
            loads[w % num_ranks][n] = loads[w % num_ranks].get(n, 0) + 1
        home = [world[r] for r in range(num_ranks)]
        self.loads = [[(self.node[n], k - (n == home[r])) for n, k in load.items()] for r, load in enumerate(loads)]
        self.home = [self.node[n] for n in home]
        self.ids = count()
        self.owner: dict[int, Event] = {}  # a rank's own task -> its done event

    def compute(self, rank: int, work: float) -> Event:
        """Start ``work`` seconds of compute on ``rank``; the event fires when it is done."""
        now, done = self.env.now, Event(self.env)
        home = self.home[rank]
        task = next(self.ids)
        self.owner[task] = done
        touched = [(home, [task])]
        for node, phantoms in self.loads[rank]:  # its replicas' work, on their nodes
            if phantoms:
                touched.append((node, [next(self.ids) for _ in range(phantoms)]))
        for node, tasks in touched:
            self._advance(node, now)
            for t in tasks:
                node.left[t] = work
                if len(node.running) < node.cores:
                    node.running[t] = now + self.slice
                else:
                    node.queue.append(t)
            self._reschedule(node, now)
        return done

    def release(self, rank: int) -> None:
        """Nothing to do: a rank holds a core only while an op of its runs."""

    def transfer(self, src: int, dst: int, delta: int) -> None:
        """Transfers do not slow compute in this model."""

    def _advance(self, node: _Node, now: float) -> None:
        spent = (now - node.since) * node.rate
        if spent:
            for t in node.running:
                node.left[t] -= spent
        node.since = now

    def _reschedule(self, node: _Node, now: float) -> None:
        ready = len(node.left)
        if not ready:
            node.timer = None
            return
        node.rate = self.rates[ready - 1]
        due = min(now + max(node.left[t], 0.0) / node.rate for t in node.running)
        if node.queue:
            due = min(due, min(node.running.values()))
        timer = node.timer = Timeout(self.env, max(due - now, 0.0))
        timer.callbacks.append(node.tick)

    def _tick(self, node: _Node, timer: simpy.Event) -> None:
        if timer is not node.timer:
            return  # outdated by a later change
        now = self.env.now
        self._advance(node, now)
        slack = 1e-12 * max(1.0, now)
        ended = [t for t in node.running if node.left[t] <= slack * node.rate]
        for t in ended:
            del node.running[t], node.left[t]
        waiting = len(node.queue)  # each rank that waited takes the core of one whose slice ran out
        expired = sorted((t for t, end in node.running.items() if end <= now + slack), key=node.running.get)
        for t in expired[:waiting]:
            del node.running[t]
            node.queue.append(t)
        for t in expired[waiting:]:  # nobody left to give way to: a new slice
            node.running[t] = now + self.slice
        while node.queue and len(node.running) < node.cores:
            node.running[node.queue.popleft()] = now + self.slice
        self._reschedule(node, now)
        for t in ended:
            done = self.owner.pop(t, None)
            if done is not None:
                done.succeed()
