"""Mutation tests: every way of breaking a built schedule is caught by the validator.

Each test takes a valid schedule of every builder, breaks it in one place and expects a
ScheduleError. The validator's dry run is a worklist over ranks, so it cannot hang;
hypothesis's per-example deadline (200 ms) is the loose bound that says so.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_schedules import build, configs

import schedules
from schedules import COMM_MODES, Op, OpKind, Schedule, ScheduleError

F, B, I, W = OpKind.F, OpKind.B, OpKind.I, OpKind.W


def _with_rank(schedule: Schedule, rank: int, rank_ops: list[Op]) -> Schedule:
    ops = list(schedule.ops)
    ops[rank] = tuple(rank_ops)
    return schedule.replace_ops(ops)


def _rejected(schedule: Schedule, *words: str) -> str:
    """Assert the schedule fails under both semantics; return one message."""
    messages = []
    for comm in COMM_MODES:
        with pytest.raises(ScheduleError) as err:
            schedules.validate(schedule, comm)
        messages.append(str(err.value))
    for word in words:
        assert word in messages[0], messages[0]
    assert ">>" in messages[0] and "<<" in messages[0]  # the grid marks the op
    return messages[0]


# Schedules without overlapped pairs: these mutations name ops by (kind, stage, mb); pairs
# are covered in tests/test_schedules_new.py.
PLAIN = [name for name in schedules.names() if name != "dualpipev"]


def _pick(data, schedule: Schedule, keep=lambda op: True) -> tuple[int, int, list[Op]]:
    """(rank, index, a copy of the rank's list) for an op that ``keep(op)`` selects."""
    spots = [(r, i) for r, rank_ops in enumerate(schedule.ops) for i, op in enumerate(rank_ops) if keep(op)]
    rank, i = data.draw(st.sampled_from(spots))
    return rank, i, list(schedule.ops[rank])


@given(configs(), st.data())
def test_dropping_a_compute_op(config, data) -> None:
    schedule = build(config)
    rank, i, rank_ops = _pick(data, schedule)
    dropped = rank_ops.pop(i)
    _rejected(_with_rank(schedule, rank, rank_ops), f"{dropped.stage}")


@given(configs(), st.data())
def test_duplicating_an_op(config, data) -> None:
    schedule = build(config)
    rank, i, rank_ops = _pick(data, schedule)
    at = data.draw(st.integers(i + 1, len(rank_ops)))
    rank_ops.insert(at, rank_ops[i])
    _rejected(_with_rank(schedule, rank, rank_ops), "appears twice")


@given(configs(names=PLAIN), st.data())
def test_backward_moved_before_its_forward(config, data) -> None:
    schedule = build(config)
    rank, i, rank_ops = _pick(data, schedule, lambda op: op.kind in (B, I))
    backward = rank_ops.pop(i)
    forward = rank_ops.index(Op(F, backward.stage, backward.mb))
    rank_ops.insert(data.draw(st.integers(0, forward)), backward)
    _rejected(_with_rank(schedule, rank, rank_ops), f"runs before its forward {backward.stage}F{backward.mb}")


@given(configs(names=["zb-h1", "zbv"]), st.data())
def test_weight_backward_moved_before_its_input_backward(config, data) -> None:
    schedule = build(config)
    rank, i, rank_ops = _pick(data, schedule, lambda op: op.kind is W)
    weight = rank_ops.pop(i)
    rank_ops.insert(rank_ops.index(Op(I, weight.stage, weight.mb)), weight)
    _rejected(_with_rank(schedule, rank, rank_ops), f"runs before its I {weight.stage}I{weight.mb}")


@given(configs(names=PLAIN), st.data())
def test_swapping_forward_and_backward_of_a_microbatch(config, data) -> None:
    schedule = build(config)
    rank, i, rank_ops = _pick(data, schedule, lambda op: op.kind in (B, I))
    j = rank_ops.index(Op(F, rank_ops[i].stage, rank_ops[i].mb))
    rank_ops[i], rank_ops[j] = rank_ops[j], rank_ops[i]
    _rejected(_with_rank(schedule, rank, rank_ops), "runs before")


@given(configs(), st.data())
def test_op_on_a_rank_not_holding_its_stage(config, data) -> None:
    schedule = build(config)
    assume(schedule.num_ranks > 1)
    rank, i, rank_ops = _pick(data, schedule)
    op = rank_ops[i]
    other = (rank + 1) % schedule.num_ranks
    copied = _with_rank(schedule, other, [op, *schedule.ops[other]])
    _rejected(copied, f"stage {op.stage} is held by rank {rank}, not {other}")


def _lowered(config) -> Schedule:
    """The lowered schedule as a plain schedule with comms, so the validator checks it
    from scratch (the lowering's own deadlock proof does not carry over)."""
    lowered = schedules.validate(build(config)).program
    assume(lowered.has_comms)  # one rank: nothing to break
    return lowered.replace_ops(lowered.ops)


@given(configs(), st.data())
def test_deleting_a_send(config, data) -> None:
    lowered = _lowered(config)
    rank, i, rank_ops = _pick(data, lowered, lambda op: op.kind in (OpKind.SEND_F, OpKind.SEND_B))
    del rank_ops[i]
    _rejected(_with_rank(lowered, rank, rank_ops), "has no matching SEND")


@given(configs(), st.data())
def test_deleting_a_recv(config, data) -> None:
    lowered = _lowered(config)
    rank, i, rank_ops = _pick(data, lowered, lambda op: op.kind in (OpKind.RECV_F, OpKind.RECV_B))
    recv = rank_ops.pop(i)
    _rejected(_with_rank(lowered, rank, rank_ops), f"{recv.stage}RECV_")


@given(configs(names=PLAIN), st.data())
def test_moving_a_recv_after_its_consumer(config, data) -> None:
    lowered = _lowered(config)
    rank, i, rank_ops = _pick(data, lowered, lambda op: op.kind in (OpKind.RECV_F, OpKind.RECV_B))
    recv = rank_ops.pop(i)
    consumer = next(j for j, op in enumerate(rank_ops[i:], i)
                    if op.stage == recv.stage and op.mb == recv.mb and not op.kind.is_comm)
    rank_ops.insert(consumer + 1, recv)
    _rejected(_with_rank(lowered, rank, rank_ops), "runs before the RECV_")


@given(configs(), st.data())
def test_moving_a_send_before_its_producer(config, data) -> None:
    lowered = _lowered(config)
    rank, i, rank_ops = _pick(data, lowered, lambda op: op.kind in (OpKind.SEND_F, OpKind.SEND_B))
    send = rank_ops.pop(i)
    producer = max(j for j, op in enumerate(rank_ops[:i])
                   if op.stage == send.stage and op.mb == send.mb and not op.kind.is_comm)
    rank_ops.insert(producer, send)
    _rejected(_with_rank(lowered, rank, rank_ops), "produced the")


@given(configs(), st.sampled_from(COMM_MODES))
def test_receiving_a_gradient_before_sending_the_activation_deadlocks(config, comm) -> None:
    # Rank 0 waits for stage 1's gradient of mb 0 before it sent mb 0's activation:
    # every rule but the dry run holds, and the dry run must report a deadlock.
    lowered = _lowered(config)
    rank_ops = list(lowered.ops[0])
    recv = next(op for op in rank_ops if op.kind is OpKind.RECV_B and op.mb == 0)
    rank_ops.remove(recv)
    rank_ops.insert(0, recv)
    broken = _with_rank(lowered, 0, rank_ops)
    with pytest.raises(ScheduleError, match=f"deadlock under {comm} communication"):
        schedules.validate(broken, comm)


def test_missing_microbatch_is_named() -> None:
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    ops = [[op for op in rank_ops if op.mb != 1] for rank_ops in schedule.ops]
    message = _rejected(schedule.replace_ops(ops), "forward 0F1 is missing")
    assert message.startswith("1f1b: rank 0: forward 0F1 is missing\n")


def test_reduce_grad_before_last_backward() -> None:
    lowered = schedules.validate(schedules.build("zb-h1", ranks=2, microbatches=3), reduce_grad=True).program
    rank_ops = list(lowered.ops[1])
    reduce = rank_ops.pop(rank_ops.index(Op(OpKind.REDUCE_GRAD, 1)))
    rank_ops.insert(rank_ops.index(Op(W, 1, 2)), reduce)
    _rejected(_with_rank(lowered, 1, rank_ops), "REDUCE_GRAD runs before the backward of microbatch 2")


def test_both_full_and_split_backward() -> None:
    schedule = schedules.build("zb-h1", ranks=1, microbatches=1)
    _rejected(schedule.replace_ops([[*schedule.ops[0], Op(B, 0, 0)]]), "both a full backward B and a split I")


def test_input_backward_without_weight_backward() -> None:
    schedule = schedules.build("zb-h1", ranks=1, microbatches=1)
    _rejected(schedule.replace_ops([[op for op in schedule.ops[0] if op.kind is not W]]), "has no matching W (0W0)")


def test_unknown_comm_semantics() -> None:
    with pytest.raises(ScheduleError, match="comm_mode must be one of async, blocking"):
        schedules.validate(schedules.build("1f1b", ranks=2, microbatches=2), "eager")
