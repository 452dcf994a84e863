"""The one lowering pass: insert SEND/RECV (and optionally REDUCE_GRAD) into compute-only lists.

Which transfers exist does not depend on the semantics: an F whose next stage lives on
another rank sends its output there (SEND_F), received by that stage's F (RECV_F); a B
or I whose previous stage lives elsewhere sends its input gradient there (SEND_B), received
by that stage's B or I (RECV_B); stages on the same rank hand data over locally. Where
the SENDs and RECVs stand does depend on it. The validator, the simulator and the
executor all implement exactly these two semantics, one lowered list each (handed out
by :func:`schedules.validate` as a :class:`~schedules.lowered.Lowered`, nothing kept on
the schedule):

``async``: a SEND is posted and the rank goes on; a RECV waits until its data arrived.
    Each SEND stands right after the op producing its data, each RECV right before the
    op consuming it. No rank then waits for data before the op that uses it, so with free
    communication this list is as fast as the compute order allows.

``blocking``: a rank's run of consecutive comm ops, the *gap* between two compute ops, is
    posted as one batch and the rank waits until the whole batch completes; a send
    completes only when its receiver has posted the matching receive (rendezvous). The
    async list can deadlock here (interleaved and V-shape schedules: neighbours each
    stuck in a SEND to the other) or just idle (zb-h1: a rank sits in its SEND_B batch
    until the upstream rank reaches the gap before the consuming I). So the gaps come
    from a unit-cost run (t_f = t_i = t_w, B = I + W; :func:`schedules.blocking_plan.plan_blocking`):

        A rank passes through a gap if its next op's input is there, and otherwise waits
        in it (for good, at the end of its list). A transfer's SEND and RECV are posted
        in the gaps where its two ranks stand at the first instant after the data exists
        at which both stand in a gap and at least one of them waits there.

    A waiting rank loses nothing by posting more. Two ranks that both only pass through
    do not meet: with other op costs one of them would stop for the other.

Why the blocking list cannot deadlock. (1) The planning run is a blocking run of the list
it writes: a gap's batch is posted when its rank arrives; each op in it meets its
counterpart the instant the later of the two ranks stands in its gap; ops join a batch
only while their rank stands in that gap, so all have met when the rank leaves, which is
when its next input has met. (2) That run finishes unless the compute order alone has a
cyclic wait, which async cannot run either. Were it stuck, every unfinished rank would
stand in a gap waiting for an input. A waiting receiver meets a produced input as soon as
its sender stands in a gap too, and here all do: so no awaited input exists yet, each
rank waits for a compute op of another stuck rank, and the waits go round a cycle.
(3) Whether a blocking list finishes does not depend on op costs (a batch completes once
its counterparts are posted, whenever that is), so the list finishes at every cost. The
validator still runs the final lists, REDUCE_GRAD included: the argument covers the pass,
the run covers what is handed out (the untimed dry run, or in its place the simulator's
timed run, which by the same cost independence proves the same).

How fast. At unit costs a blocking rank waits beyond what async waits only for data whose
sender is busy in an op it started after producing it. For every built-in schedule with
ranks 1..8, microbatches 1..16 (and chunks 2..4 for interleaved) that never happens:
blocking makespan equals async makespan (tests/test_lowering_blocking.py). Other costs
can make neighbours miss each other by part of an op.

Where it comes from. torch.distributed.pipelining's ``_add_send_recv`` also lowers by
simulating the ranks, letting the sender "put our recv ops in place"; here the simulation
is timed and rendezvous-aware. Megatron-LM's batched p2p calls (send_forward_recv_backward
in 1F1B, send_forward_backward_recv_forward_backward in the interleaved steady state) post
each receive in the batch where the neighbour's matching send stands at the same moment
under uniform costs; the run above finds such pairings for any compute order instead of
writing them per schedule. It costs O(ops): one pass to find the transfers, one run over
integer instants, one pass to place them.

With ``reduce_grad=True`` a REDUCE_GRAD of each stage follows that stage's last backward
op, so the gradient all-reduce of a stage can overlap the backwards of the other stages:
under ``async`` after the SENDs that stand right after it (the upstream rank is not kept
waiting); under ``blocking`` after the whole batch there (:func:`schedules.ir.batch_ends`),
since a REDUCE_GRAD inside a batch would split it in two and the planned meetings with it
(the dp > 1 deadlock, e.g. rank 0 at ``2SEND_B1 | 2REDUCE_GRAD | 0RECV_B3`` while rank 1
stands at ``1SEND_B3 | 4REDUCE_GRAD | 1RECV_B1``).

An OVERLAP_F_B is one compute op with both parts' transfers: the RECVs of its forward and
its backward stand before it, their SENDs after it.
"""

from __future__ import annotations

from typing import Sequence

from .blocking_plan import plan_blocking
from .ir import COMM_MODES, Op, OpKind, Schedule, ScheduleError, batch_ends, gc_paused, is_send

__all__ = ["lower"]

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
SEND_F, RECV_F, SEND_B, RECV_B = OpKind.SEND_F, OpKind.RECV_F, OpKind.SEND_B, OpKind.RECV_B
_NONE: tuple[Op, ...] = ()

Transfers = list[tuple[Op, ...]]  # per op of one rank: its RECVs (or its SENDs), often ()


def _edge_table(schedule: Schedule) -> dict[OpKind, list[tuple[OpKind | None, OpKind | None]]]:
    """Per kind (F, B, I) and stage: the kinds of the RECV and the SEND an op of that stage
    needs (None: the neighbour stage is on the same rank, handed over locally). Built once
    for the whole schedule, since a stage's rank is ``stage_to_rank[stage]``: a table per
    rank would cost ranks x stages, the square of the rank count."""
    where = schedule.stage_to_rank
    last = schedule.num_stages - 1
    prev = [s > 0 and where[s - 1] != where[s] for s in range(last + 1)]
    after = [s < last and where[s + 1] != where[s] for s in range(last + 1)]
    forward = [(RECV_F if p else None, SEND_F if n else None) for p, n in zip(prev, after)]
    backward = [(RECV_B if n else None, SEND_B if p else None) for p, n in zip(prev, after)]
    return {F: forward, B: backward, I: backward}


def _off_rank(kind: OpKind, stage: int, rank: int, where: tuple[int, ...]) -> tuple[OpKind | None, OpKind | None]:
    """The table's entry for an op standing on a rank that does not hold its stage (the
    validator refuses such a schedule before lowering; :func:`lower` called on its own
    still treats neighbours on ``rank`` as local, as it always has)."""
    prev = stage > 0 and where[stage - 1] != rank
    after = stage < len(where) - 1 and where[stage + 1] != rank
    if kind is F:
        return RECV_F if prev else None, SEND_F if after else None
    return RECV_B if after else None, SEND_B if prev else None


def _transfers(schedule: Schedule, rank: int, table=None) -> tuple[Transfers, Transfers]:
    """For each op of ``rank``: the RECVs that bring its inputs from other ranks and the
    SENDs that take its outputs to other ranks (one each for F, B, I; two for a pair).
    ``table``: :func:`_edge_table` of the schedule, made once for all ranks."""
    where = schedule.stage_to_rank
    table = _edge_table(schedule) if table is None else table

    def edges(op: Op) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
        kinds = table.get(op.kind)
        if kinds is None:
            if op.kind is OpKind.OVERLAP_F_B:
                (fr, fs), (br, bs) = edges(op.pair[0]), edges(op.pair[1])
                return fr + br, fs + bs
            return _NONE, _NONE
        recv, send = kinds[op.stage] if where[op.stage] == rank else _off_rank(op.kind, op.stage, rank, where)
        return ((Op(recv, op.stage, op.mb),) if recv is not None else _NONE,
                (Op(send, op.stage, op.mb),) if send is not None else _NONE)

    pairs = [edges(op) for op in schedule.ops[rank]]
    return [recv for recv, _ in pairs], [send for _, send in pairs]


def _async_list(rank_ops, recvs: Transfers, sends: Transfers) -> list[Op]:
    """Each RECV right before its consumer, each SEND right after its producer."""
    out: list[Op] = []
    for op, recv, send in zip(rank_ops, recvs, sends):
        out += recv
        out.append(op)
        out += send
    return out


def _blocking_list(rank_ops, recvs: Transfers, sends: Transfers, recv_gap: list[int], send_gap: list[int]) -> list[Op]:
    """Each RECV and SEND in the gap the plan gave it (``recv_gap[j]`` for the j-th RECV of
    the rank in op order); within a gap SENDs, then RECVs, each in list order (a gap is one
    batch, posted at once, so this order is only for reading)."""
    sends_at: dict[int, list[Op]] = {}
    recvs_at: dict[int, list[Op]] = {}
    for gaps, ops, at in ((send_gap, sends, sends_at), (recv_gap, recvs, recvs_at)):
        flat = [op for group in ops for op in group]
        for gap, op in zip(gaps, flat):
            at.setdefault(gap, []).append(op)
    out: list[Op] = []
    n = len(rank_ops)
    for gap in range(n + 1):
        out += sends_at.get(gap, _NONE)
        out += recvs_at.get(gap, _NONE)
        if gap < n:
            out.append(rank_ops[gap])
    return out


def _add_reduce_grad(rank_ops: Sequence[Op], comm_mode: str) -> list[Op]:
    """A REDUCE_GRAD per stage after the stage's last backward and the SENDs (async) or the
    whole batch (blocking) that follows it; see the module docstring for why."""
    last_backward: dict[int, int] = {}
    for i, op in enumerate(rank_ops):
        for part in op.parts:
            if part.kind is B or part.kind is W:
                last_backward[part.stage] = i
    ends = batch_ends(rank_ops) if comm_mode == "blocking" else None
    after: dict[int, list[int]] = {}
    for stage, i in last_backward.items():
        if ends is not None:
            i = ends[i + 1] - 1 if i + 1 < len(rank_ops) and rank_ops[i + 1].kind.is_comm else i
        else:
            while i + 1 < len(rank_ops) and is_send(rank_ops[i + 1].kind):
                i += 1
        after.setdefault(i, []).append(stage)
    out: list[Op] = []
    for i, op in enumerate(rank_ops):
        out.append(op)
        if i in after:
            out += [Op(OpKind.REDUCE_GRAD, stage) for stage in sorted(after[i])]
    return out


def lower(schedule: Schedule, comm_mode: str = "async", reduce_grad: bool = False) -> Schedule:
    """Insert point-to-point ops (and a REDUCE_GRAD per stage when ``reduce_grad``) for
    ``comm_mode``. A schedule that already has SEND/RECV keeps them as they are. The result is
    not checked: :func:`schedules.validate` calls this and dry-runs what it returns."""
    if comm_mode not in COMM_MODES:
        raise ScheduleError(f"comm_mode must be one of {', '.join(COMM_MODES)}, got {comm_mode!r}")
    with gc_paused():
        program = schedule
        if not schedule.has_comms:
            table = _edge_table(schedule)
            edges = [_transfers(schedule, rank, table) for rank in range(schedule.num_ranks)]
            recvs, sends = [r for r, _ in edges], [s for _, s in edges]
            plan = plan_blocking(schedule, recvs, sends) if comm_mode == "blocking" else None
            if plan is None:  # async, or a compute order that no placement can run
                lists = map(_async_list, schedule.ops, recvs, sends)
            else:
                lists = map(_blocking_list, schedule.ops, recvs, sends, *plan)
            program = schedule.replace_ops(lists)
        if reduce_grad and not program.has_reduce_grad:
            program = program.replace_ops(_add_reduce_grad(rank_ops, comm_mode) for rank_ops in program.ops)
        return program
