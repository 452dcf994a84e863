"""The one lowering pass: insert SEND/RECV (and optionally REDUCE_GRAD) into compute-only lists.

Rules, shared by every builder and every loaded schedule:
  * a SEND goes right after the op that produces the data (F -> SEND_F, B or I -> SEND_B);
  * a RECV goes right before the op that consumes it (RECV_F before F, RECV_B before B or I);
  * stages on the same rank hand data over locally: no SEND/RECV between them.

Two communication semantics are defined on the lowered lists; the validator, the
simulator and the executor all implement exactly these:
  * ``async``: a SEND is posted and the rank goes on; a RECV waits until its data arrived.
  * ``blocking``: a rank's run of consecutive communication ops is posted as one batch and
    the rank waits until the whole batch completes; a send completes only when its
    receiver has posted the matching receive (rendezvous).

The placement above is what ``async`` runs: no rank ever waits for data earlier than the
op that uses it. Under ``blocking`` it is deadlock-free for the single-chunk schedules,
since the sends of one op's output and the receives of the next op's input stand next to
each other and form one batch (Megatron's send_forward_recv_backward pairs): neighbours
in 1F1B's steady state post mirror-image batches and complete them together. Schedules
whose traffic runs both ways between two ranks (interleaved, V-shape) can deadlock on
rendezvous, rank A sending to B while B sends to A; so for ``comm="blocking"`` the pass
runs a blocking dry run and, wherever every rank is stuck, moves the RECV of a waiting
send up into the batch where its receiver is stuck (see ``schedules.dryrun``). That
posts the receive earlier, which costs nothing under rendezvous, and would make ``async``
ranks wait early for nothing: hence one lowered list per semantics, cached on the schedule.

With ``reduce_grad=True`` a REDUCE_GRAD of each stage follows that stage's last backward
op (after the SENDs that op triggers, so the upstream rank is not kept waiting): the
gradient all-reduce of a stage can then overlap the backwards of the rank's other stages.
"""

from __future__ import annotations

from .dryrun import COMMS, repair_blocking
from .ir import Op, OpKind, Schedule, gc_paused, is_send

__all__ = ["lower"]

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W
SEND_F, RECV_F, SEND_B, RECV_B = OpKind.SEND_F, OpKind.RECV_F, OpKind.SEND_B, OpKind.RECV_B


def _lower_rank(schedule: Schedule, rank: int) -> list[Op]:
    where = schedule.stage_to_rank
    last = schedule.num_stages - 1
    # Per stage: is the neighbour upstream / downstream on another rank? Looked up once
    # per op instead of re-deriving it, since this loop runs over every op of a schedule.
    remote_prev = [s > 0 and where[s - 1] != rank for s in range(last + 1)]
    remote_next = [s < last and where[s + 1] != rank for s in range(last + 1)]
    out: list[Op] = []
    append = out.append
    for op in schedule.ops[rank]:
        kind = op.kind
        if kind is F:
            stage, mb = op.stage, op.mb
            if remote_prev[stage]:
                append(Op(RECV_F, stage, mb))
            append(op)
            if remote_next[stage]:
                append(Op(SEND_F, stage, mb))
        elif kind is B or kind is I:
            stage, mb = op.stage, op.mb
            if remote_next[stage]:
                append(Op(RECV_B, stage, mb))
            append(op)
            if remote_prev[stage]:
                append(Op(SEND_B, stage, mb))
        else:
            append(op)
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
        lowered = schedule.replace_ops(_lower_rank(schedule, r) for r in range(schedule.num_ranks))
        if comm == "blocking":
            repaired, finished = repair_blocking(lowered)
            lowered = lowered.replace_ops(repaired)
            lowered.__dict__["_deadlock_free"] = finished  # read by the validator
    if reduce_grad and not lowered.has_reduce_grad:
        lowered = lowered.replace_ops(_add_reduce_grad(rank_ops) for rank_ops in lowered.ops)
    return lowered
