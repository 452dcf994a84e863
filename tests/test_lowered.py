"""The checked lowered type: only validate makes one, its final lists (REDUCE_GRAD included)
are the dry-run-checked ones, nothing is cached on a Schedule (that the IR is a leaf:
tests/test_architecture.py)."""

from __future__ import annotations

import random
from dataclasses import fields

import pytest
from test_lowering_blocking import _random_order

import schedules
import simulator
from schedules import Lowered, Op, OpKind, Schedule, ScheduleError
from schedules.dryrun import Deadlock
from schedules.lowering import _add_reduce_grad, lower
from simulator.encode import encode

SEEDS = 2000  # random orders; times dp in {1, 2} and both semantics
SIMULATED_EVERY = 50  # of those, also run by the SimPy model at random costs


def test_only_validate_makes_a_lowered() -> None:
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    with pytest.raises(TypeError, match="only by schedules.validate"):
        Lowered(schedule, "async", False, schedule)
    lowered = schedules.validate(schedule, "blocking", reduce_grad=True)
    assert (lowered.schedule, lowered.comm_mode, lowered.reduce_grad) == (schedule, "blocking", True)
    assert lowered.ops == lowered.program.ops and lowered.num_ranks == 2 and lowered.name == "1f1b"
    with pytest.raises(AttributeError):
        lowered.comm_mode = "async"  # type: ignore[misc]


def test_a_lowered_carries_its_comm_mode_and_simulate_returns_what_ran() -> None:
    schedule = schedules.build("zbv", ranks=2, microbatches=4)
    lowered = schedules.validate(schedule, "blocking")
    for comm_mode in schedules.COMM_MODES:  # not even the same one: it is already there
        with pytest.raises(ValueError, match="comm_mode"):
            schedules.dry_run(lowered, comm_mode)
        with pytest.raises(ValueError, match="comm_mode"):
            simulator.simulate(lowered, comm_mode=comm_mode)
    assert schedules.dry_run(lowered).makespan == 0.0
    result = simulator.simulate(schedule, comm_mode="blocking")
    assert result.schedule == lowered and result.comm_mode == "blocking"
    # the trace holds one row per op of the lists that ran, in their order
    ran = [(rank, str(op)) for rank, op in result.schedule]
    rows = result.trace[["rank", "kind", "stage", "mb"]].itertuples(index=False)
    assert [(r, f"{s}{k}{'' if k == 'REDUCE_GRAD' else mb}") for r, k, s, mb in rows] == ran
    found, model = schedules.validate_with(lambda program, mode: _Ran(program.num_ops()), schedule, "async")
    assert found == schedules.validate(schedule, "async") and model.ran == found.num_ops()
    stuck = _Ran(0)
    stuck.stuck = {1: 0}
    with pytest.raises(ScheduleError, match="deadlock under async communication: rank 1 at"):
        schedules.validate_with(lambda program, mode: stuck, schedule, "async")


class _Ran:
    def __init__(self, ran: int):
        self.ran, self.stuck = ran, {}


def test_nothing_is_cached_or_flagged_on_a_schedule() -> None:
    schedule = schedules.build("zbv", ranks=4, microbatches=8)
    for comm in schedules.COMM_MODES:
        schedules.validate(schedule, comm, reduce_grad=True)
    assert set(vars(schedule)) == {f.name for f in fields(Schedule)}
    assert not hasattr(Schedule, "with_comms") and not hasattr(Schedule, "to_csv")


def test_one_batching_rule() -> None:
    ops = [Op.parse(t) for t in "0F0 0SEND_F0 0RECV_B0 0B0 0SEND_B0 0REDUCE_GRAD 0RECV_F1".split()]
    assert schedules.batch_ends(ops) == [1, 3, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("name", ["interleaved-1f1b", "zbv", "zb-h1", "dualpipev"])
def test_the_dry_run_the_lowering_and_the_simulator_batch_by_it(name: str) -> None:
    """Under blocking, every consumer posts the batches batch_ends names: the dry run and the
    simulator start every op of a batch at the same instant, the simulator's encoder keeps
    exactly those ends, and the lowering puts no REDUCE_GRAD inside one (it would split it)."""
    lowered = schedules.validate(schedules.build(name, ranks=4, microbatches=8), "blocking", reduce_grad=True)
    program = lowered.program
    ends = [schedules.batch_ends(rank_ops) for rank_ops in program.ops]
    costs = simulator.Costs(t_f=1.0, t_i=0.7, t_w=0.4, latency=0.3, dp=2, grad_bytes=1.0)
    parts = [[part for op in rank_ops for part in op.parts] for rank_ops in program.ops]  # as encoded
    assert encode(program, costs, blocking=True).batch_end == [schedules.batch_ends(rank_ops) for rank_ops in parts]
    dry = schedules.dry_run(lowered, durations={OpKind.F: 1.0, OpKind.I: 0.7, OpKind.W: 0.4})
    trace = simulator.simulate(lowered, costs).trace
    batches = 0
    for rank, rank_ops in enumerate(program.ops):
        simulated = trace[(trace["rank"] == rank) & (trace["kind"] != "OPTIMIZER")]["start"].tolist()
        expanded = [i for i, op in enumerate(rank_ops) for _ in op.parts]  # a pair is two rows
        starts = {i: simulated[expanded.index(i)] for i in range(len(rank_ops))}
        for i, end in enumerate(ends[rank]):
            if end > i + 1 and (i == 0 or ends[rank][i - 1] != end):  # opens a batch of several
                batches += 1
                assert len({dry.start[rank][j] for j in range(i, end)}) == 1
                assert len({starts[j] for j in range(i, end)}) == 1
        for i, op in enumerate(rank_ops[1:-1], 1):
            if op.kind is OpKind.REDUCE_GRAD:
                assert not (rank_ops[i - 1].kind.is_comm and rank_ops[i + 1].kind.is_comm)
    assert batches > 0


def _old_placement(program: Schedule) -> Schedule:
    """REDUCE_GRAD right after the SENDs of the last backward, as before, also for blocking."""
    return program.replace_ops(_add_reduce_grad(rank_ops, "async") for rank_ops in program.ops)


def test_the_dp_deadlock_hole_is_closed() -> None:
    # Seed 1453 is one of the about 1 in 1000 random orders where a REDUCE_GRAD put inside
    # a blocking batch splits it and two ranks wait on each other's other half.
    schedule = _random_order(1453)
    with pytest.raises(Deadlock):
        schedules.dry_run(_old_placement(lower(schedule, "blocking")), "blocking")
    lowered = schedules.validate(schedule, "blocking", reduce_grad=True)
    schedules.dry_run(lowered)  # finishes


def _shuffled(schedule: Schedule, rng: random.Random) -> Schedule:
    """Swap two neighbouring ops of one rank: often invalid (order, or a cyclic wait)."""
    ops = [list(rank_ops) for rank_ops in schedule.ops]
    rank = rng.randrange(schedule.num_ranks)
    if len(ops[rank]) > 1:
        i = rng.randrange(len(ops[rank]) - 1)
        ops[rank][i], ops[rank][i + 1] = ops[rank][i + 1], ops[rank][i]
    return schedule.replace_ops(ops)


def test_random_orders_either_raise_or_run() -> None:
    """validate either raises ScheduleError or returns lists that a dry run at random op
    costs completes, and (every SIMULATED_EVERY-th case) that the SimPy model completes
    with random link costs: over random valid orders and one-swap variants of them,
    dp in {1, 2}, both semantics."""
    rng = random.Random(0)
    counts = {"ran": 0, "raised": 0}
    for seed in range(SEEDS):
        valid = _random_order(seed)
        for schedule in (valid, _shuffled(valid, rng)):
            for dp in (1, 2):
                for comm in schedules.COMM_MODES:
                    try:
                        lowered = schedules.validate(schedule, comm, reduce_grad=dp > 1)
                    except ScheduleError:
                        assert schedule is not valid  # a valid order always validates
                        counts["raised"] += 1
                        continue
                    durations = {k: rng.choice([0.5, 1.0, 2.0]) for k in (OpKind.F, OpKind.I, OpKind.W)}
                    schedules.dry_run(lowered, durations=durations)
                    if (seed + dp) % SIMULATED_EVERY == 0:
                        costs = simulator.Costs(t_f=durations[OpKind.F], t_i=durations[OpKind.I], latency=0.3,
                                                dp=dp, grad_bytes=1.0, bandwidth=4.0)
                        simulator.simulate(lowered, costs)
                    counts["ran"] += 1
    # 2000 seeds x 2 orders x 2 dp x 2 semantics = 16000 cases
    assert counts["ran"] + counts["raised"] == SEEDS * 8
    assert counts["raised"] > 0 and counts["ran"] > SEEDS * 4
