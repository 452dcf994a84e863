"""Zero bubble schedules synthesized for measured costs under a memory cap (Qi et al., "Zero
Bubble Pipeline Parallelism", ICLR 2024, §3.1 and Appendix B): the engine of ``zb-auto``,
``zb-1p`` and ``zb-2p`` (registered in :mod:`schedules.zb_auto`).

The paper's heuristic, run as a timed list schedule of every rank at once (the costs
t_f, t_i, t_w per stage and t_comm per hop are what it times with):

* a rank that is free runs an input-backward I whose gradient has arrived, else a
  forward F whose input has arrived, if the stage's activations then stay within
  ``memory_limit``; in the warm-up this schedules as many F as memory allows before the
  first I, and afterwards F and I alternate as they come;
* a weight pass W (the oldest owed) fills a wait for the next input when the wait is at
  least t_w, or, with ``fill_short`` (the paper's second knob), any wait at all; a W
  also runs when memory blocks the next F (it frees the stage's last share);
* with ``eager_warmup`` off (the first knob) a rank does not start an F that would delay
  an input gradient already on its way by more than it saves;
* when F and I are used up the owed W run one by one.
As in the paper, every combination of the two knobs is tried and the order with the
smallest cost (the longest per-stage span, its objective) is kept; the ILP refinement
is left out.

Memory is counted per stage and microbatch as in :mod:`simulator.memory`: an F holds 1
until its I frees ``1 - w_memory_fraction``; its W frees the rest. ``memory_limit`` is in
those units: p gives the paper's ZB-1p, 2p its ZB-2p. A stage whose next F is not its
rank's last chunk keeps one unit free for the later chunk (or a V would wedge: the
turn of the V needs a forward of the last chunk to free anything).

The same engine builds :mod:`schedules.v_shape` (V placement, unit costs).
"""

from __future__ import annotations

import heapq
import math
from itertools import product
from typing import Sequence

from .ir import Op, OpKind, ScheduleError
from .registry import StageCosts

__all__ = ["greedy"]

F, I, W = OpKind.F, OpKind.I, OpKind.W


class _Greedy:
    """One run of the heuristic for one setting of the knobs."""

    def __init__(self, ranks: int, m: int, where: Sequence[int], timing: StageCosts, limit: float, w_share: float,
                 eager_warmup: bool, fill_short: bool, diagonal: bool, inflight: int | None = None):
        self.p, self.m, self.where, self.timing = ranks, m, tuple(where), timing
        self.stages = len(where)
        self.limit, self.w_share = limit, w_share
        self.eager, self.fill_short, self.diagonal = eager_warmup, fill_short, diagonal and len(where) == ranks
        self.inflight = inflight  # at most this many microbatches between stage 0's F and its I
        self.entered = self.returned = 0

        self.stages_of = [[s for s in range(self.stages) if where[s] == r] for r in range(ranks)]
        self.next_f = [0] * self.stages  # next microbatch to forward, per stage
        self.ready: dict[tuple[OpKind, int, int], float] = {}  # input arrival of F / I (stage, mb)
        self.i_ready: list[list[tuple[float, int, int]]] = [[] for _ in range(ranks)]  # heap (time, -stage, mb)
        self.owed: list[list[tuple[int, int]]] = [[] for _ in range(ranks)]  # W owed, oldest first
        self.memory = [0.0] * ranks
        self.clock = [0.0] * ranks
        self.first = [math.inf] * ranks
        self.ops: list[list[Op]] = [[] for _ in range(ranks)]
        self.started = [False] * ranks  # has the rank run its first I (warm-up over)?
        self.warmup = [0] * ranks  # forwards a rank ran before its first I
        self.last_i = [False] * ranks  # was its last F-or-I an I?
        self.events: list[float] = [0.0]  # instants at which an op ends or an input arrives
        self.due: dict[float, set[int]] = {0.0: set(range(ranks))}  # instant -> ranks it concerns
        for mb in range(m):
            self.ready[F, 0, mb] = 0.0

    def _hop(self, a: int, b: int) -> float:
        return 0.0 if self.where[a] == self.where[b] else self.timing.t_comm

    def _forward_candidate(self, rank: int) -> tuple[float, int] | None:
        """(arrival, stage) of the forward this rank would run next, memory allowing."""
        best = None
        last = self.stages_of[rank][-1]
        for s in reversed(self.stages_of[rank]):  # the deeper chunk first: it leads to an I sooner
            mb = self.next_f[s]
            if mb >= self.m or (F, s, mb) not in self.ready:
                continue
            if s == 0 and self.inflight is not None and self.entered - self.returned >= self.inflight:
                continue
            room = 1.0 if s == last else 2.0  # keep one unit for the rank's last chunk
            if self.memory[rank] + room > self.limit + 1e-9:
                continue
            when = self.ready[F, s, mb]
            if best is None or when < best[0]:
                best = (when, s)
        return best

    def _run(self, rank: int, op: Op, start: float, cost: float) -> None:
        self.ops[rank].append(op)
        self.first[rank] = min(self.first[rank], start)
        end = self.clock[rank] = start + cost
        self._at(end, rank)
        s, mb = op.stage, op.mb
        if op.kind is F:
            self.next_f[s] += 1
            self.memory[rank] += 1.0
            self.entered += s == 0

            if s + 1 < self.stages:
                arrive = self.ready[F, s + 1, mb] = end + self._hop(s, s + 1)
                self._at(arrive, self.where[s + 1])
            else:
                heapq.heappush(self.i_ready[rank], (end, -s, mb))
        elif op.kind is I:
            self.memory[rank] -= 1.0 - self.w_share
            self.returned += s == 0

            self.owed[rank].append((s, mb))
            if s > 0:
                arrive = end + self._hop(s, s - 1)
                heapq.heappush(self.i_ready[self.where[s - 1]], (arrive, -(s - 1), mb))
                self._at(arrive, self.where[s - 1])
        else:
            self.memory[rank] -= self.w_share

    def _step(self, rank: int, now: float) -> bool:
        """Let a free ``rank`` start one op at ``now``; False if it waits."""
        t = self.timing
        i_next = self.i_ready[rank][0] if self.i_ready[rank] else None
        f_next = self._forward_candidate(rank)
        i_now = i_next is not None and i_next[0] <= now
        f_now = f_next is not None and f_next[0] <= now
        forwards_left = any(self.next_f[s] < self.m for s in self.stages_of[rank])
        # After the warm-up F and I alternate (the paper's 1F-1B pattern); before it, F
        # until the first gradient is back.
        want_f = not self.started[rank] or (self.last_i[rank] and forwards_left)
        if f_now and not self.eager and i_next is not None and i_next[0] < now + t.t_f and not self.started[rank]:
            f_now = False  # eager_warmup off: do not delay a gradient due within t_f
        if f_now and self.diagonal and not self.started[rank] and self.next_f[rank] >= max(1, int(self.limit) - rank):
            f_now = False  # diagonal: rank r warms up with one F fewer than r - 1 (limit - r)
        if i_now and (not want_f or not f_now):
            heapq.heappop(self.i_ready[rank])
            if not self.started[rank]:
                self.warmup[rank] = sum(self.next_f[s] for s in self.stages_of[rank])
            self._run(rank, Op(I, -i_next[1], i_next[2]), now, t.t_i)
            self.started[rank] = self.last_i[rank] = True
            return True
        if f_now and (want_f or i_next is None or i_next[0] >= now + t.t_f):
            self._run(rank, Op(F, f_next[1], self.next_f[f_next[1]]), now, t.t_f)
            self.last_i[rank] = False
            return True
        if not self.owed[rank]:
            return False
        wake = min((x[0] for x in (i_next, f_next) if x is not None), default=math.inf)
        blocked = forwards_left and f_next is None
        gap = wake - now
        if gap >= t.t_w or (blocked and want_f) or (self.fill_short and gap > 0):
            s, mb = self.owed[rank].pop(0)
            self._run(rank, Op(W, s, mb), now, t.t_w)
            return True
        return False

    def _at(self, when: float, rank: int) -> None:
        """Something for ``rank`` happens at ``when``: its op ends, or an input arrives."""
        ranks = self.due.get(when)
        if ranks is None:
            heapq.heappush(self.events, when)
            ranks = self.due[when] = set()
        ranks.add(rank)

    def run(self) -> list[list[Op]]:
        """At each instant something ends or arrives, step the free ranks it concerns, in
        rank order. Stepping every free rank would give the same order at a cost of ranks
        per instant, the square of the rank count: a step changes nothing when it starts
        no op, and one that starts none cannot start one later before something of its own
        happens (an op of its ends, an input arrives), since the waits it weighs only grow
        shorter as time passes and everything else it looks at is its own."""
        total, done = 3 * self.m * self.stages, 0
        while done < total:
            if not self.events:
                raise ScheduleError("synthesis: memory_limit is too low for any order to finish "
                                    "(every rank waits with its activations full)")
            now = heapq.heappop(self.events)
            for rank in sorted(self.due.pop(now)):
                if self.clock[rank] <= now and self._step(rank, now):
                    done += 1
        return self.ops

    def cost(self) -> float:
        """The paper's objective: the longest span of a stage, first op to last op."""
        return max(self.clock[r] - self.first[r] for r in range(self.p) if self.ops[r])


def greedy(ranks: int, microbatches: int, where: Sequence[int], timing: StageCosts, memory_limit: float,
           w_memory_fraction: float = 0.5, inflight: Sequence[int | None] = (None,),
           by_makespan: bool = False) -> list[list[Op]]:
    """The heuristic's best order over its three knobs (and, for the V schedules, caps on
    the microbatches in flight between stage 0's F and I): per-rank op lists, compute
    only. ``memory_limit`` is in stage-microbatch activations on one rank. Best is the
    paper's longest stage span, or with ``by_makespan`` this project's makespan."""
    best: tuple[float, list[list[Op]]] | None = None
    one_stage_each = len(where) == ranks  # the diagonal knob applies to one stage per rank only
    knobs = product((True, False), (True, False), (True, False) if one_stage_each else (False,))
    for cap, (eager, fill, diagonal) in product(inflight, list(knobs)):
        run = _Greedy(ranks, microbatches, where, timing, memory_limit, w_memory_fraction, eager, fill, diagonal, cap)
        try:
            ops = run.run()
        except ScheduleError:
            if cap is None:
                raise
            continue  # a cap this low wedges the V: other caps remain
        cost = max(run.clock) if by_makespan else run.cost()
        if best is None or cost < best[0] - 1e-9:
            best = (cost, ops)
    return best[1]
