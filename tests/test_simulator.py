"""The simulator against closed forms, hand-worked cases and the schedules' dry run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schedules
import simulator
import timeline
from schedules import OpKind
from simulator import Costs

GRID = [(p, m) for p in (1, 2, 3, 4, 8) for m in (1, 2, 3, 4, 8, 16)]


def _build(name: str, p: int, m: int):
    try:
        return schedules.build(name, ranks=p, microbatches=m)
    except schedules.ScheduleError:
        return None  # a combination the schedule does not accept


def _analytic(name: str, p: int, m: int, v: int):
    try:
        return schedules.analytic.bubble_fraction(name, p, m, v)
    except ValueError:
        return None  # no closed form here


@pytest.mark.parametrize("name", ["naive", "gpipe", "1f1b", "interleaved-1f1b", "zb-h1"])
@pytest.mark.parametrize("comm", schedules.COMM_MODES)
def test_bubble_matches_closed_form(name, comm):
    covered = 0
    for p, m in GRID:
        schedule = _build(name, p, m)
        expected = None if schedule is None else _analytic(name, p, m, schedule.chunks)
        if expected is None:
            continue
        result = simulator.simulate(schedule, comm_mode=comm)
        assert result.bubble_fraction == pytest.approx(expected, abs=1e-9), (p, m)
        assert result.makespan == pytest.approx(schedules.analytic.makespan(name, p, m, schedule.chunks), abs=1e-9)
        covered += 1
    assert covered >= 8 or comm == "blocking"


def test_closed_form_grid_includes_fewer_microbatches_than_ranks():
    result = simulator.simulate(schedules.build("1f1b", ranks=8, microbatches=3))
    assert result.bubble_fraction == pytest.approx(7 / 10, abs=1e-9)  # (p - 1) / (m + p - 1)


@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_naive_utilisation_is_one_over_p(p):
    result = simulator.simulate(schedules.build("naive", ranks=p, microbatches=5))
    assert sum(result.busy) / (p * result.makespan) == pytest.approx(1 / p, abs=1e-12)
    assert all(b == pytest.approx(1 - 1 / p) for b in result.bubble_per_rank)


@pytest.mark.parametrize("name", schedules.names())
@pytest.mark.parametrize("comm", schedules.COMM_MODES)
def test_compute_times_equal_the_dry_run(name, comm):
    """With free communication the simulator is the dry run with costs: same start and end
    for every compute op, under both semantics, with per-kind costs that differ."""
    costs = Costs(t_f=1.0, t_i=1.5, t_w=0.75)
    durations = {OpKind.F: 1.0, OpKind.I: 1.5, OpKind.W: 0.75}
    for p, m in [(2, 4), (3, 3), (4, 8), (4, 2)]:
        schedule = _build(name, p, m)
        if schedule is None:
            continue
        lowered = schedules.validate(schedule, comm)
        oracle = schedules.dry_run(lowered, durations=durations)
        starts, ends = _per_part(lowered, oracle, durations)
        result = simulator.simulate(schedule, costs, comm)
        trace = result.trace
        compute = (trace["stream"] == "compute").to_numpy()
        assert np.allclose(trace["start"].to_numpy()[compute], starts[compute], atol=1e-12)
        assert np.allclose(trace["end"].to_numpy()[compute], ends[compute], atol=1e-12)
        assert result.makespan == pytest.approx(oracle.makespan)


def _per_part(lowered, oracle, durations) -> tuple[np.ndarray, np.ndarray]:
    """The dry run's times per trace row: an OVERLAP_F_B pair is its F, then its B."""
    starts, ends = [], []
    for rank, rank_ops in enumerate(lowered.ops):
        for op, start, end in zip(rank_ops, oracle.start[rank], oracle.end[rank]):
            if op.pair is None:
                starts.append(start)
                ends.append(end)
                continue
            split = start + durations[OpKind.F]
            starts += [start, split]
            ends += [split, end]
    return np.array(starts), np.array(ends)


def test_imbalanced_stages_by_hand():
    """GPipe, p = 2, m = 3; stage 1 is the bottleneck: t_f = (1, 3), t_b = t_i + t_w = (2, 3).
    Rank 0's forwards end at 1, 2, 3; rank 1 runs F at 1-4, 4-7, 7-10, then B at 10-13,
    13-16, 16-19; rank 0's backwards wait for those: 13-15, 16-18, 19-21.
    Makespan = t_f0 + m (t_f1 + t_b1) + t_b0 = 1 + 3 * 6 + 2 = 21."""
    costs = Costs(t_f=[1, 3], t_i=[1, 1], t_w=[1, 2])
    result = simulator.simulate(schedules.build("gpipe", ranks=2, microbatches=3), costs)
    assert result.makespan == pytest.approx(21.0)
    assert result.busy == pytest.approx((3 * 1 + 3 * 2, 3 * 3 + 3 * 3))
    assert result.bubble_fraction == pytest.approx(1 - 27 / 42)
    rank0_b = result.trace.query("rank == 0 and kind == 'B'")
    assert list(rank0_b["start"]) == pytest.approx([13, 16, 19])


@pytest.mark.parametrize("latency, act_bytes, bandwidth", [(0.25, 0.0, float("inf")), (0.05, 100.0, 500.0)])
def test_latency_adds_exactly_the_hand_worked_delay(latency, act_bytes, bandwidth):
    """1F1B, p = 2, m = 2, unit costs (B = 2), each transfer taking L = latency + bytes/bw.
    Rank 0: F0 0-1 (arrives 1+L), F1 1-2 (arrives 2+L). Rank 1: F0 at 1+L..2+L, B0 ..4+L,
    its gradient arrives at 4+2L; F1 (already there) 4+L..5+L, B1 ..7+L, arrives 7+2L.
    Rank 0: B0 4+2L..6+2L, B1 7+2L..9+2L. Free communication gives 9, so the step grows
    by exactly 2L: one trip down and one back on the critical path (for L <= 1)."""
    took = latency + act_bytes / bandwidth
    costs = Costs(latency=latency, act_bytes=act_bytes, bandwidth=bandwidth)
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    assert simulator.simulate(schedule).makespan == pytest.approx(9.0)
    assert simulator.simulate(schedule, costs).makespan == pytest.approx(9.0 + 2 * took)


def _p2p(name: str) -> list:
    return [(p, m) for p, m in [(2, 4), (4, 4), (4, 8), (3, 6)] if _build(name, p, m) is not None]


@pytest.mark.parametrize("name", schedules.names())
def test_blocking_never_beats_async(name):
    """Blocking waits on a superset of what async waits on. It is strictly slower once
    transfers take time, except for naive: only one rank works at a time there, so a
    sender waiting for its transfer loses nothing (the issue's "strictly" does not hold)."""
    for (p, m), costs in itertools.product(_p2p(name), [Costs(), Costs(latency=0.1),
                                                        Costs(act_bytes=1e6, bandwidth=1e7, latency=1e-3)]):
        schedule = _build(name, p, m)
        asynchronous = simulator.simulate(schedule, costs, "async").makespan
        blocking = simulator.simulate(schedule, costs, "blocking").makespan
        assert blocking >= asynchronous - 1e-12
        if costs.latency > 0 and name != "naive":
            assert blocking > asynchronous + 1e-9, (p, m, costs)


def test_per_link_costs_differ_by_rank_pair():
    """A slow link between ranks 1 and 2 (inter-node) costs more than a uniform fast one."""
    schedule = schedules.build("1f1b", ranks=4, microbatches=4)
    fast = {(0, 1): 1e-3, (1, 2): 1e-3, (2, 3): 1e-3}
    slow = {**fast, (1, 2): 0.5}
    a = simulator.simulate(schedule, Costs(latency=fast)).makespan
    b = simulator.simulate(schedule, Costs(latency=slow)).makespan
    assert b > a + 0.5
    with pytest.raises(ValueError, match="no entry for the link between ranks 2 and 3"):
        simulator.simulate(schedule, Costs(latency={(0, 1): 0.1, (1, 2): 0.1}))


def test_one_link_carries_one_transfer_at_a_time():
    """GPipe p = 2, t_f = 0 for stage 0: rank 0 posts m sends at time 0 on one link, each
    taking 1 s; they arrive at 1, 2, ..., m, so rank 1's forwards start then."""
    costs = Costs(t_f=[0, 0.1], latency=1.0)
    result = simulator.simulate(schedules.build("gpipe", ranks=2, microbatches=4), costs)
    recv = result.trace.query("kind == 'RECV_F'")
    assert list(recv["end"]) == pytest.approx([1, 2, 3, 4])


def test_data_parallel_ring_all_reduce():
    """dp = 4, 1F1B p = 2: each stage's REDUCE_GRAD takes 2(d-1)/d * bytes/bw + 2(d-1) * lat;
    async ranks overlap it with their remaining work but wait for it before the step ends."""
    d, size, bw, lat = 4, 8e6, 1e8, 1e-3
    ring = 2 * (d - 1) / d * size / bw + 2 * (d - 1) * lat
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    costs = Costs(dp=d, grad_bytes=size, dp_bandwidth=bw, dp_latency=lat, optimizer_time=0.5)
    result = simulator.simulate(schedule, costs)
    reduce = result.trace.query("kind == 'REDUCE_GRAD'")
    assert len(reduce) == 2 and (reduce["mb"] == -1).all() and (reduce["stream"] == "reduce").all()
    assert list(reduce["end"] - reduce["start"]) == pytest.approx([ring, ring])
    # rank 0 ends last: its last B ends at 9, then the reduction, then the optimizer
    assert result.makespan == pytest.approx(9 + ring + 0.5)
    optimizer = result.trace.query("kind == 'OPTIMIZER'")
    assert list(optimizer["end"] - optimizer["start"]) == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("name", ["zb-h1", "1f1b"])
def test_a_received_gradient_is_held_until_the_op_that_last_needs_it(name):
    """A RECV_B's gradient counts from its arrival until its B ends, or, under a split
    backward, until its W ends: W's weight gradient is made from the output gradient I was
    given (the executor's stage keeps it; tests/test_executor_instrument.py measures it)."""
    trace = simulator.simulate(schedules.build(name, ranks=2, microbatches=4), Costs(t_f=1.0, t_i=1.0, t_w=1.0)).trace
    held = simulator.memory_timeline(trace, act_memory=0.0, grad_memory=1.0)
    held = held[held["rank"] == 0]
    change = held["bytes"].diff().fillna(held["bytes"])
    rank0 = trace[trace["rank"] == 0]
    last = "W" if name == "zb-h1" else "B"
    assert sorted(held["time"][change > 0]) == sorted(rank0[rank0["kind"] == "RECV_B"]["end"])
    assert sorted(held["time"][change < 0]) == sorted(rank0[rank0["kind"] == last]["end"])


def test_memory_gpipe_holds_every_microbatch():
    m = 6
    result = simulator.simulate(schedules.build("gpipe", ranks=4, microbatches=m), Costs(act_memory=3.0))
    assert result.peak_memory[0].inflight == m
    assert result.peak_memory[0].bytes == pytest.approx(3.0 * m)


@pytest.mark.parametrize("p, m", [(4, 8), (4, 2), (8, 16), (3, 3)])
def test_memory_1f1b_holds_p_minus_r(p, m):
    result = simulator.simulate(schedules.build("1f1b", ranks=p, microbatches=m))
    assert [pm.inflight for pm in result.peak_memory] == [min(m, p - r) for r in range(p)]
    assert [pm.bytes for pm in result.peak_memory] == pytest.approx([min(m, p - r) for r in range(p)])


@pytest.mark.parametrize("p, m, w", [(4, 8, 0.5), (8, 16, 0.25), (4, 4, 1.0)])
def test_memory_zb_h1_matches_1f1b_peak_and_holds_w_shares(p, m, w):
    """ZB-H1 keeps 1F1B's in-flight counts (I frees as early as B), and rank r also holds
    the W share of its r deferred W passes: peak bytes (p - r) + r * w, highest on rank 0."""
    costs = Costs(act_memory=1.0, w_memory_fraction=w)
    zb = simulator.simulate(schedules.build("zb-h1", ranks=p, microbatches=m), costs)
    one = simulator.simulate(schedules.build("1f1b", ranks=p, microbatches=m), costs)
    assert [pm.inflight for pm in zb.peak_memory] == [min(m, p - r) for r in range(p)]
    assert max(pm.bytes for pm in zb.peak_memory) == pytest.approx(max(pm.bytes for pm in one.peak_memory))
    assert zb.peak_memory[0].bytes == pytest.approx(p)
    assert [pm.bytes for pm in zb.peak_memory] == pytest.approx([(p - r) + r * w for r in range(p)])


@pytest.mark.parametrize("name", schedules.names())
@pytest.mark.parametrize("comm", schedules.COMM_MODES)
def test_trace_invariants(name, comm):
    costs = Costs(latency=0.05, act_bytes=1e3, bandwidth=1e5)
    schedule = _build(name, 4, 8)
    result = simulator.simulate(schedule, costs, comm)
    trace = result.trace
    assert list(trace.columns) == simulator.TRACE_COLUMNS
    assert (trace["end"] >= trace["start"]).all()
    # compute boxes on one rank never overlap
    for _, rows in trace[trace["stream"] == "compute"].groupby("rank"):
        rows = rows.sort_values("start")
        assert (rows["start"].to_numpy()[1:] >= rows["end"].to_numpy()[:-1] - 1e-12).all()
    # every RECV ends no earlier than its SEND's start plus the transfer time
    pairs = timeline.transfers(trace)
    assert len(pairs) == (trace["stream"] == "send").sum() == (trace["stream"] == "recv").sum()
    assert (pairs["end_recv"] >= pairs["start_send"] + 0.05 + 1e3 / 1e5 - 1e-12).all()
    # the ops in the trace are exactly the lowered schedule's ops, rank by rank
    lowered = schedules.validate(schedule, comm)  # what simulate runs: lowered for this semantics
    listed = [(r, part.stage, -1 if part.mb is None else part.mb, part.kind.value)
              for r, op in lowered for part in op.parts]  # a pair is traced as its F and its B
    assert list(trace[["rank", "stage", "mb", "kind"]].itertuples(index=False, name=None)) == listed
    assert result.events == len(listed)


def test_simulate_validates_first():
    bad = schedules.Schedule("bad", 2, 1, 2, (0, 1), [[schedules.Op(OpKind.F, 0, 0)], [schedules.Op(OpKind.B, 1, 0)]])
    with pytest.raises(schedules.ScheduleError):
        simulator.simulate(bad)
    with pytest.raises(ValueError, match="comm"):
        simulator.simulate(schedules.build("1f1b", 2, 2), comm_mode="eventually")


def test_loaded_schedule_with_comms_runs_as_written(tmp_path):
    schedule = schedules.build("zb-h1", ranks=3, microbatches=4)
    path = tmp_path / "zb.csv"
    schedules.write_csv(schedules.validate(schedule), path)
    loaded = schedules.load_csv(path)
    assert simulator.simulate(loaded).makespan == pytest.approx(simulator.simulate(schedule).makespan)


def test_async_overlaps_a_transfer_with_compute():
    """GPipe p = 2, m = 2, unit costs, each transfer 0.9 s: under async rank 0 starts F1 at 1
    while F0's activation is on the wire; under blocking it first waits for rank 1 to
    post the receive and the transfer to finish (rendezvous), so F1 starts at 1.9."""
    costs = Costs(latency=0.9)
    schedule = schedules.build("gpipe", ranks=2, microbatches=2)
    for comm, expected in (("async", 1.0), ("blocking", 1.9)):
        trace = simulator.simulate(schedule, costs, comm).trace
        f1 = trace.query("rank == 0 and kind == 'F' and mb == 1")
        assert float(f1["start"].iloc[0]) == pytest.approx(expected), comm


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(schedules.names()), p=st.integers(1, 5), m=st.integers(1, 8),
       latency=st.floats(0, 2), t_f=st.floats(0.1, 3), t_w=st.floats(0, 2))
def test_properties_over_random_cases(name, p, m, latency, t_f, t_w):
    """For any schedule and costs: blocking never beats async, compute never overlaps on a
    rank, and each rank is busy exactly its share of the work."""
    schedule = _build(name, p, m)
    if schedule is None:
        return
    costs = Costs(t_f=t_f, t_i=1.0, t_w=t_w, latency=latency)
    a = simulator.simulate(schedule, costs, "async")
    b = simulator.simulate(schedule, costs, "blocking")
    assert b.makespan >= a.makespan - 1e-9
    for rank in range(p):
        cost = {OpKind.F: t_f, OpKind.B: 1.0 + t_w, OpKind.I: 1.0, OpKind.W: t_w}
        work = sum(cost[part.kind] for op in schedule.ops[rank] for part in op.parts)  # a pair: both
        assert a.busy[rank] == pytest.approx(work)
        rows = a.trace[(a.trace["rank"] == rank) & (a.trace["stream"] == "compute")].sort_values("start")
        assert (rows["start"].to_numpy()[1:] >= rows["end"].to_numpy()[:-1] - 1e-9).all()
    assert 0 <= a.bubble_fraction < 1
