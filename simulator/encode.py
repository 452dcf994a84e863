"""Lowered op lists turned into flat int/float columns once, so the SimPy loop stays cheap.

Everything an op needs is a function of (kind, stage) plus its microbatch: its dispatch
code, its cost (compute time, the SEND's time on its link, or the REDUCE_GRAD's ring
time), the rank a SEND goes to, and the number naming its transfer
(:meth:`schedules.ir.Transfer.numbering`, the numbering the dry run uses too), the same on
the SEND and on the RECV side. So one small (kind x stage) table per column is
built from the costs, and the ops are only read once for (kind, stage, mb).

An OVERLAP_F_B is encoded as its two parts, F then B, back to back, each at
``Costs.overlap_f_b`` times its own cost: together ``overlap_f_b * (t_f + t_b)``, and the
trace and memory see both ops (F allocates at its start, B frees at its end). Under
``blocking`` a rank posts the batch from an op to ``batch_end`` at once
(:func:`schedules.batch_ends`, the rule the dry run and the lowering use).

Host time around ops (``Costs.dispatch_*``) is folded into the compute ops, so the rank
loop pays nothing for it: each compute op carries its own ``dispatch_compute`` after it
(``post``); a SEND's ``dispatch_send`` goes to the compute op before it when nothing but
sends lie between them (the send is then posted when that op's time is up, as the
executor posts it after the handler), else, like every RECV's ``dispatch_recv``, to the
compute op after it (``pre``). The trace takes ``pre`` off each op's start and ``post``
off its end, so ops keep their own times and the host time shows as time between ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import numpy as np

from schedules import OpKind, Schedule, batch_ends
from schedules.ir import Transfer

from .costs import Costs

__all__ = ["Encoded", "encode", "COMPUTE", "SEND", "RECV", "REDUCE", "KINDS", "CODES"]

COMPUTE, SEND, RECV, REDUCE = 0, 1, 2, 3
KINDS = list(OpKind)  # row order of the tables; trace kinds are KINDS[kind]
_ROW = {k: i for i, k in enumerate(KINDS)}
_CODE = {OpKind.F: COMPUTE, OpKind.B: COMPUTE, OpKind.I: COMPUTE, OpKind.W: COMPUTE,
         OpKind.SEND_F: SEND, OpKind.SEND_B: SEND, OpKind.RECV_F: RECV, OpKind.RECV_B: RECV,
         OpKind.REDUCE_GRAD: REDUCE, OpKind.OVERLAP_F_B: COMPUTE}  # a pair never reaches the columns
CODES = np.array([_CODE[k] for k in KINDS])  # dispatch code by table row
_KIND, _STAGE, _MB = attrgetter("kind"), attrgetter("stage"), attrgetter("mb")


@dataclass
class Encoded:
    """Flat columns over all ranks (``kind``, ``stage``, ``mb``, ``rank``) and, per rank, the
    Python lists the rank process indexes (``code``, ``key``, ``cost``, ``dest``,
    ``batch_end``: the index past the blocking batch an op opens)."""

    kind: np.ndarray
    stage: np.ndarray
    mb: np.ndarray
    rank: np.ndarray
    code: list[list[int]]
    key: list[list[int]]
    cost: list[list[float]]
    dest: list[list[int]]
    batch_end: list[list[int]] | None  # only under blocking
    free: bool  # no transfer takes time: no link processes needed
    pre: np.ndarray | None = None  # host time folded into the start of each (compute) op; None: none
    post: np.ndarray | None = None  # and into its end


def _tables(schedule: Schedule, costs: Costs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cost, dest, key base) indexed [kind row, stage]; key = base + mb."""
    stages, where = schedule.num_stages, schedule.stage_to_rank
    cost = np.zeros((len(KINDS), stages))
    dest = np.full((len(KINDS), stages), -1, dtype=np.int64)
    base = np.full((len(KINDS), stages), -1, dtype=np.int64)
    t_f, t_i, t_w = (np.asarray(costs.per_stage(n, stages)) for n in ("t_f", "t_i", "t_w"))
    cost[_ROW[OpKind.F]], cost[_ROW[OpKind.I]], cost[_ROW[OpKind.W]] = t_f, t_i, t_w
    cost[_ROW[OpKind.B]] = costs.backward(stages)
    cost[_ROW[OpKind.REDUCE_GRAD]] = [costs.reduce_time(s, stages) for s in range(stages)]
    size = costs.per_stage("act_bytes", stages)
    m, offset = Transfer.numbering(stages, schedule.num_microbatches)
    for kind, shift in offset.items():
        base[_ROW[kind]] = np.arange(stages) * m + shift
    for s in range(stages - 1):  # boundary s -> s + 1
        a, b = where[s], where[s + 1]
        if a == b:
            continue  # handed over locally: no SEND on this boundary
        dest[_ROW[OpKind.SEND_F], s], dest[_ROW[OpKind.SEND_B], s + 1] = b, a
        cost[_ROW[OpKind.SEND_F], s] = costs.transfer(a, b, size[s])
        cost[_ROW[OpKind.SEND_B], s + 1] = costs.transfer(b, a, size[s])
    return cost, dest, base


def encode(schedule: Schedule, costs: Costs, blocking: bool = False) -> Encoded:
    """Columns of a lowered schedule's lists (``Lowered.program``); ``batch_end`` only when
    ``blocking``."""
    if any(OpKind.OVERLAP_F_B in map(_KIND, rank_ops) for rank_ops in schedule.ops):
        rows = [[part for op in rank_ops for part in op.parts] for rank_ops in schedule.ops]
        paired = np.array([op.pair is not None for rank_ops in schedule.ops for op in rank_ops for _ in op.parts])
    else:
        rows, paired = schedule.ops, None
    ops = list(chain.from_iterable(rows))
    kind = np.fromiter(map(_ROW.__getitem__, map(_KIND, ops)), np.int64, len(ops))
    stage = np.fromiter(map(_STAGE, ops), np.int64, len(ops))
    mb = np.fromiter((-1 if m is None else m for m in map(_MB, ops)), np.int64, len(ops))  # REDUCE_GRAD: None
    counts = [len(rank_ops) for rank_ops in rows]
    rank = np.repeat(np.arange(schedule.num_ranks), counts)
    cost_t, dest_t, base_t = _tables(schedule, costs)
    code = CODES[kind]
    base = base_t[kind, stage]
    key = np.where((code == SEND) | (code == RECV), base + mb, -1)
    cost, dest = cost_t[kind, stage], dest_t[kind, stage]
    if paired is not None:
        cost = np.where(paired, cost * costs.overlap_f_b, cost)
    bounds = np.cumsum([0] + counts).tolist()

    def per_rank(column: np.ndarray) -> list[list]:
        flat = column.tolist()
        return [flat[bounds[r]:bounds[r + 1]] for r in range(schedule.num_ranks)]

    free = not bool((cost[code == SEND] > 0).any())
    pre = post = None
    if costs.dispatches:
        first_of_pair = np.zeros(len(code), dtype=bool) if paired is None else paired & (kind == _ROW[OpKind.F])
        pre, post = _dispatch(code, bounds, first_of_pair, costs)
        cost = cost + pre + post
    _check_span(cost, costs, schedule.num_ranks)
    ends = [batch_ends(rank_ops) for rank_ops in rows] if blocking else None
    return Encoded(kind, stage, mb, rank, per_rank(code), per_rank(key), per_rank(cost), per_rank(dest), ends, free,
                   pre, post)


def _check_span(cost: np.ndarray, costs: Costs, num_ranks: int) -> None:
    """Refuse costs whose step time a float cannot hold. Every op one after another, at the
    slowest compute rate, then the longest optimizer step, is a bound on any makespan; a
    finite bound keeps every time the model computes finite (t_f = 1e308 would otherwise
    run to inf and print a makespan of inf, or look like a deadlock)."""
    with np.errstate(over="ignore"):
        total = float(cost.sum())
    slowest = min([costs.rate(k) for k in range(1, len(costs.share) + 1)] or [1.0]) * (1 - costs.comm_interference)
    bound = total / slowest + max(costs.optimizer(r, num_ranks) for r in range(num_ranks))
    if not math.isfinite(bound):
        raise ValueError(f"Costs: the op times add up past what a float holds ({bound} s over {len(cost)} ops, "
                         f"the most is about 1.8e308): scale the times or sizes down")


def _dispatch(code: np.ndarray, bounds, first_of_pair: np.ndarray, costs: Costs) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) host seconds per op (see the module's docstring); zero off compute ops."""
    pre, post = [0.0] * len(code), [0.0] * len(code)
    codes, firsts = code.tolist(), first_of_pair.tolist()  # Python ints: this loop visits every op
    for r in range(len(bounds) - 1):
        last, received, owed = -1, False, 0.0  # last compute op; a RECV since it; time for the next
        for i in range(bounds[r], bounds[r + 1]):
            c = codes[i]
            if c == COMPUTE:
                pre[i], owed, received = owed, 0.0, False
                if not firsts[i]:  # the pair's two parts run back to back
                    post[i] = costs.dispatch_compute
                last = i
            elif c == SEND and last >= 0 and not received:
                post[last] += costs.dispatch_send
            elif c == SEND:
                owed += costs.dispatch_send
            elif c == RECV:
                owed += costs.dispatch_recv
                received = True
    return np.array(pre), np.array(post)
