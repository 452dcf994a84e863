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

Why the placement above is deadlock-free under ``blocking`` for the built-in schedules:
the sends of one op's output and the receives of the next op's input stand next to each
other, so they form one batch, exactly Megatron's send_forward_recv_backward /
send_backward_recv_forward pairs. Two neighbours in 1F1B's steady state then post
mirror-image batches ([SEND_F a, RECV_B b] against [SEND_B b, RECV_F a]) and complete
together instead of each waiting for the other's next batch. Posting a whole batch at
once is also what keeps the warm-up and cool-down edges free of send/send cycles.

With ``reduce_grad=True`` a REDUCE_GRAD of each stage follows that stage's last backward
op (after the SENDs that op triggers, so the upstream rank is not kept waiting): the
gradient all-reduce of a stage can then overlap the backwards of the rank's other stages.
"""

from __future__ import annotations

from .dryrun import repair_blocking
from .ir import Op, OpKind, Schedule, is_send

__all__ = ["lower"]

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W


def _lower_rank(schedule: Schedule, rank: int) -> list[Op]:
    where = schedule.stage_to_rank
    last = schedule.num_stages - 1
    out: list[Op] = []
    for op in schedule.ops[rank]:
        kind, stage, mb = op.kind, op.stage, op.mb
        if kind is F and stage > 0 and where[stage - 1] != rank:
            out.append(Op(OpKind.RECV_F, stage, mb))
        elif (kind is B or kind is I) and stage < last and where[stage + 1] != rank:
            out.append(Op(OpKind.RECV_B, stage, mb))
        out.append(op)
        if kind is F and stage < last and where[stage + 1] != rank:
            out.append(Op(OpKind.SEND_F, stage, mb))
        elif (kind is B or kind is I) and stage > 0 and where[stage - 1] != rank:
            out.append(Op(OpKind.SEND_B, stage, mb))
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
        out.extend(Op(OpKind.REDUCE_GRAD, stage) for stage in sorted(after.get(i, ())))
    return out


def lower(schedule: Schedule, reduce_grad: bool = False) -> Schedule:
    """Insert point-to-point ops (and REDUCE_GRAD when ``reduce_grad``).

    A schedule that already has SEND/RECV keeps them as they are.
    """
    lowered = schedule
    if not schedule.has_comms:
        lowered = schedule.replace_ops(_lower_rank(schedule, r) for r in range(schedule.num_ranks))
        repaired, finished = repair_blocking(lowered)
        lowered = lowered.replace_ops(repaired)
        lowered.__dict__["_deadlock_free"] = finished  # read by the validator
    if reduce_grad and not lowered.has_reduce_grad:
        lowered = lowered.replace_ops(_add_reduce_grad(rank_ops) for rank_ops in lowered.ops)
    return lowered
