"""The lowering and the validator cost O(ops): no table of ranks x stages (issue #18, item 4)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

import schedules
from schedules.ir import Op, OpKind, Schedule
from schedules.lowering import _transfers


def _reference_transfers(schedule: Schedule, rank: int):
    """The definition, op by op: a neighbour stage on another rank than this op's is remote."""
    where, last = schedule.stage_to_rank, schedule.num_stages - 1

    def edges(op: Op):
        if op.kind is OpKind.OVERLAP_F_B:
            (fr, fs), (br, bs) = edges(op.pair[0]), edges(op.pair[1])
            return fr + br, fs + bs
        s, up, down = op.stage, op.stage > 0 and where[op.stage - 1] != rank, op.stage < last and where[op.stage + 1] != rank
        if op.kind is OpKind.F:
            return (((Op(OpKind.RECV_F, s, op.mb),) if up else ()), ((Op(OpKind.SEND_F, s, op.mb),) if down else ()))
        if op.kind in (OpKind.B, OpKind.I):
            return (((Op(OpKind.RECV_B, s, op.mb),) if down else ()), ((Op(OpKind.SEND_B, s, op.mb),) if up else ()))
        return (), ()

    pairs = [edges(op) for op in schedule.ops[rank]]
    return [r for r, _ in pairs], [s for _, s in pairs]


@pytest.mark.parametrize("name", schedules.names())
def test_transfers_match_the_definition(name: str) -> None:
    chunks = [None] if schedules.default_chunks(name) == 1 else [2, 3]
    for p, m, v in ((p, m, v) for p in (1, 2, 3, 4, 5) for m in (1, 2, 5, 8, 10) for v in chunks):
        if not schedules.registry.accepts(name, p, m, v):
            continue
        try:
            schedule = schedules.build(name, ranks=p, microbatches=m, chunks=v)
        except schedules.ScheduleError:
            continue
        for rank in range(p):
            assert _transfers(schedule, rank) == _reference_transfers(schedule, rank), (name, p, m, v, rank)


def test_an_op_on_a_rank_without_its_stage_keeps_its_old_transfers() -> None:
    """lower() on an unchecked schedule: the op's neighbours are judged from the rank it stands on."""
    good = schedules.build("1f1b", ranks=3, microbatches=2)
    moved = [list(r) for r in good.ops]
    moved[0].append(moved[1].pop(0))  # 1F0 onto rank 0
    schedule = Schedule("moved", 3, 2, 3, good.stage_to_rank, moved)
    for rank in range(3):
        assert _transfers(schedule, rank) == _reference_transfers(schedule, rank)


@pytest.mark.parametrize("comm", schedules.COMM_MODES)
def test_3000_ranks_validate_in_a_second_and_200_mb(comm: str) -> None:
    """Before: 4.5 s and 1.3 GB, a table of stages per rank in the lowering."""
    schedule = schedules.build("1f1b", ranks=3000, microbatches=8)
    began = time.process_time()
    schedules.validate(schedule, comm)
    cpu = time.process_time() - began
    tracemalloc.start()
    try:
        schedules.validate(schedule, comm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cpu <= 1.0, f"validate took {cpu:.2f} CPU s"
    assert peak <= 200e6, f"validate peaked at {peak / 1e6:.0f} MB"
