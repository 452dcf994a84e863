"""The one lowering pass: insert SEND/RECV (and optionally REDUCE_GRAD) into compute-only lists.

Which transfers exist does not depend on the semantics: an F whose next stage lives on
another rank sends its output there (SEND_F), received by that stage's F (RECV_F); a B
or I whose previous stage lives elsewhere sends its input gradient there (SEND_B), received
by that stage's B or I (RECV_B); stages on the same rank hand data over locally. Where
the SENDs and RECVs stand does depend on it. The validator, the simulator and the
executor all implement exactly these two semantics, one lowered list each (cached on
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
its counterparts are posted, whenever that is), so the list finishes at every cost; the
validator trusts the planning run instead of dry-running the list again.

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
op (after the SENDs that stand right after it, so the upstream rank is not kept waiting):
the gradient all-reduce of a stage can then overlap the backwards of the other stages.
"""

from __future__ import annotations

from .blocking_plan import plan_blocking
from .dryrun import COMMS
from .ir import Op, OpKind, Schedule, gc_paused, is_send

__all__ = ["lower", "proven_deadlock_free"]

# Set on a lowered schedule, the way functools.cached_property caches on an instance;
# only this module writes or reads it.
_PLANNED = "_blocking_plan_finished"

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
SEND_F, RECV_F, SEND_B, RECV_B = OpKind.SEND_F, OpKind.RECV_F, OpKind.SEND_B, OpKind.RECV_B


def _transfers(schedule: Schedule, rank: int) -> tuple[list[Op | None], list[Op | None]]:
    """For each op of ``rank``: the RECV that brings its input from another rank and the
    SEND that takes its output to another rank, None where there is none."""
    where = schedule.stage_to_rank
    last = schedule.num_stages - 1
    # Per stage: is the neighbour upstream / downstream on another rank? Looked up once
    # per op instead of re-deriving it, since this loop runs over every op of a schedule.
    remote_prev = [s > 0 and where[s - 1] != rank for s in range(last + 1)]
    remote_next = [s < last and where[s + 1] != rank for s in range(last + 1)]
    recvs: list[Op | None] = []
    sends: list[Op | None] = []
    for op in schedule.ops[rank]:
        kind, stage = op.kind, op.stage
        if kind is F:
            recvs.append(Op(RECV_F, stage, op.mb) if remote_prev[stage] else None)
            sends.append(Op(SEND_F, stage, op.mb) if remote_next[stage] else None)
        elif kind is B or kind is I:
            recvs.append(Op(RECV_B, stage, op.mb) if remote_next[stage] else None)
            sends.append(Op(SEND_B, stage, op.mb) if remote_prev[stage] else None)
        else:
            recvs.append(None)
            sends.append(None)
    return recvs, sends


def _async_list(rank_ops, recvs: list[Op | None], sends: list[Op | None]) -> list[Op]:
    """Each RECV right before its consumer, each SEND right after its producer."""
    out: list[Op] = []
    append = out.append
    for op, recv, send in zip(rank_ops, recvs, sends):
        if recv is not None:
            append(recv)
        append(op)
        if send is not None:
            append(send)
    return out


def _blocking_list(rank_ops, recvs, sends, recv_gap: list[int], send_gap: list[int]) -> list[Op]:
    """Each RECV and SEND in the gap the plan gave it; within a gap SENDs, then RECVs, each
    in list order (a gap is one batch, posted at once, so this order is only for reading)."""
    n = len(rank_ops)
    sends_at: dict[int, list[Op]] = {}
    recvs_at: dict[int, list[Op]] = {}
    for i in range(n):
        if sends[i] is not None:
            sends_at.setdefault(send_gap[i], []).append(sends[i])
        if recvs[i] is not None:
            recvs_at.setdefault(recv_gap[i], []).append(recvs[i])
    out: list[Op] = []
    for gap in range(n + 1):
        if gap in sends_at:
            out += sends_at[gap]
        if gap in recvs_at:
            out += recvs_at[gap]
        if gap < n:
            out.append(rank_ops[gap])
    return out


def _add_reduce_grad(rank_ops: list[Op] | tuple[Op, ...]) -> list[Op]:
    last_backward: dict[int, int] = {}
    for i, op in enumerate(rank_ops):
        if op.kind is B or op.kind is W:
            last_backward[op.stage] = i
    after: dict[int, list[int]] = {}
    for stage, i in last_backward.items():
        while i + 1 < len(rank_ops) and is_send(rank_ops[i + 1].kind):
            i += 1
        after.setdefault(i, []).append(stage)
    out: list[Op] = []
    for i, op in enumerate(rank_ops):
        out.append(op)
        if i in after:
            out += [Op(OpKind.REDUCE_GRAD, stage) for stage in sorted(after[i])]
    return out


def lower(schedule: Schedule, reduce_grad: bool = False, comm: str = "async") -> Schedule:
    """Insert point-to-point ops (and REDUCE_GRAD when ``reduce_grad``) for ``comm``.

    A schedule that already has SEND/RECV keeps them as they are.
    """
    if comm not in COMMS:
        raise ValueError(f"comm must be one of {', '.join(COMMS)}, got {comm!r}")
    with gc_paused():
        return _lower(schedule, reduce_grad, comm)


def _lower(schedule: Schedule, reduce_grad: bool, comm: str) -> Schedule:
    lowered = schedule
    if not schedule.has_comms:
        edges = [_transfers(schedule, rank) for rank in range(schedule.num_ranks)]
        recvs, sends = [r for r, _ in edges], [s for _, s in edges]
        plan = plan_blocking(schedule, recvs, sends) if comm == "blocking" else None
        if plan is None:  # async, or a compute order that no placement can run
            lists = map(_async_list, schedule.ops, recvs, sends)
        else:
            lists = map(_blocking_list, schedule.ops, recvs, sends, *plan)
        lowered = schedule.replace_ops(lists)
        if plan is not None:
            lowered.__dict__[_PLANNED] = True
    if reduce_grad and not lowered.has_reduce_grad:
        lowered = lowered.replace_ops(_add_reduce_grad(rank_ops) for rank_ops in lowered.ops)
    return lowered


def proven_deadlock_free(lowered: Schedule) -> bool:
    """Whether ``lowered`` is a blocking list this pass placed from a finished planning run:
    such a list finishes at any op costs (see above), so it needs no dry run to show it."""
    return lowered.__dict__.get(_PLANNED, False)
