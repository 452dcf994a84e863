"""Costs: validation of bad values, and calibration from a trace (round trip through the simulator)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import schedules
import simulator
from simulator import Costs
from simulator.calibrate import costs_from_trace


@pytest.mark.parametrize("kwargs, message", [
    ({"t_f": -1.0}, "Costs.t_f must be >= 0"),
    ({"t_i": math.nan}, "Costs.t_i must be >= 0"),
    ({"t_w": math.inf}, "Costs.t_w must be finite"),
    ({"t_f": [1.0, -2.0]}, "Costs.t_f must be >= 0"),
    ({"t_f": []}, "Costs.t_f is an empty list"),
    ({"t_f": "fast"}, "Costs.t_f must be a number"),
    ({"bandwidth": 0.0}, "Costs.bandwidth must be > 0"),
    ({"bandwidth": {(0, 1): 0}}, "Costs.bandwidth must be > 0"),
    ({"latency": {"0-1": 1e-3}}, "keys must be .src_rank, dst_rank. pairs"),
    ({"latency": -1e-6}, "Costs.latency must be >= 0"),
    ({"dp": 0}, "Costs.dp must be a whole number >= 1"),
    ({"w_memory_fraction": 1.5}, "within .0, 1."),
    ({"optimizer_time": math.nan}, "Costs.optimizer_time"),
    ({"dispatch_send": -1e-6}, "Costs.dispatch_send must be >= 0"),
    ({"dispatch_recv": math.inf}, "Costs.dispatch_recv must be finite"),
])
def test_bad_values_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        Costs(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"t_f": [1.0, 1.0, 1.0]}, r"Costs.t_f has 3 values; expected one per stage \(num_stages = 4\)"),
    ({"act_bytes": [1.0] * 4}, r"Costs.act_bytes has 4 values; expected one per stage boundary"),
    ({"act_memory": [1.0] * 5}, "Costs.act_memory has 5 values"),
])
def test_wrong_lengths_fail_before_the_run(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulator.simulate(schedules.build("1f1b", ranks=4, microbatches=4), Costs(**kwargs))


def test_costs_are_frozen_and_lists_become_tuples():
    costs = Costs(t_f=[1.0, 2.0])
    assert costs.t_f == (1.0, 2.0)
    with pytest.raises(AttributeError):
        costs.t_f = 3.0  # type: ignore[misc]


def test_ring_defaults_to_the_slowest_link():
    costs = Costs(bandwidth={(0, 1): 1e9, (1, 2): 1e8}, latency={(0, 1): 1e-6, (1, 2): 1e-5})
    assert costs.ring() == (1e8, 1e-5)
    assert costs.link("bandwidth", 2, 1) == 1e8  # one direction given: applies both ways


TRUE = Costs(t_f=[1.0, 2.0, 1.5], t_i=[0.5, 1.0, 0.75], t_w=[0.25, 0.5, 0.5],
             act_bytes=[1e6, 4e6], latency=2e-3, bandwidth=1e9, optimizer_time=0.3)


def _measured(name: str, comm: str = "async") -> pd.DataFrame:
    schedule = schedules.build(name, ranks=3, microbatches=6)
    return simulator.simulate(schedule, TRUE, comm).trace


def test_from_trace_recovers_split_backward_costs():
    costs = costs_from_trace(_measured("zb-h1"), act_bytes=TRUE.act_bytes)
    assert costs.t_f == pytest.approx(TRUE.t_f)
    assert costs.t_i == pytest.approx(TRUE.t_i)
    assert costs.t_w == pytest.approx(TRUE.t_w)
    assert costs.latency == pytest.approx(TRUE.latency, rel=1e-6)
    assert costs.bandwidth == pytest.approx(TRUE.bandwidth, rel=1e-6)
    assert costs.optimizer_time == pytest.approx(0.3)


def test_from_trace_splits_a_full_backward_half_and_half():
    costs = costs_from_trace(_measured("1f1b"))
    t_b = [i + w for i, w in zip(TRUE.t_i, TRUE.t_w)]
    assert costs.t_i == pytest.approx([b / 2 for b in t_b])
    assert [i + w for i, w in zip(costs.t_i, costs.t_w)] == pytest.approx(t_b)


def test_from_trace_splits_b_by_the_measured_ratio_when_some_stage_was_split():
    trace = _measured("zb-h1")
    stage2 = trace[(trace["stage"] == 2) & trace["kind"].isin(["I", "W"])]
    merged = stage2[stage2["kind"] == "I"].assign(kind="B", end=stage2[stage2["kind"] == "I"]["start"].to_numpy()
                                                  + 1.25)
    trace = pd.concat([trace.drop(stage2.index), merged], ignore_index=True)
    costs = costs_from_trace(trace)
    ratio = 0.5 / 0.75  # stages 0 and 1: I / (I + W) = 2/3
    assert costs.t_i[2] == pytest.approx(ratio * 1.25)
    assert costs.t_w[2] == pytest.approx((1 - ratio) * 1.25)


def test_from_trace_with_one_message_size_fits_latency_only():
    costs = costs_from_trace(_measured("1f1b"))  # no sizes given
    assert costs.bandwidth == math.inf
    assert costs.latency > 0
    assert any("latency only" in note for note in costs.notes)


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb-h1"])
def test_calibrated_costs_predict_the_measured_step(name):
    trace = _measured(name)
    costs = costs_from_trace(trace, act_bytes=TRUE.act_bytes)
    predicted = simulator.simulate(schedules.build(name, ranks=3, microbatches=6), costs)
    assert predicted.makespan == pytest.approx(float(trace["end"].max()), rel=1e-9)


def test_from_trace_rejects_a_trace_without_compute():
    with pytest.raises(ValueError, match="no compute rows"):
        costs_from_trace(simulator.empty_trace())
    with pytest.raises(ValueError, match="lacks column"):
        costs_from_trace(pd.DataFrame({"rank": [0]}))


def test_from_trace_fits_the_data_parallel_ring():
    """REDUCE_GRAD durations with three gradient sizes give back the ring's bandwidth and latency."""
    true = Costs(dp=4, grad_bytes=[1e6, 3e6, 2e6], dp_bandwidth=5e8, dp_latency=1e-4)
    schedule = schedules.build("1f1b", ranks=3, microbatches=3)
    trace = simulator.simulate(schedule, true).trace
    costs = costs_from_trace(trace, dp=4, grad_bytes=true.grad_bytes)
    assert costs.dp_bandwidth == pytest.approx(5e8, rel=1e-6)
    assert costs.dp_latency == pytest.approx(1e-4, rel=1e-6)
    assert simulator.simulate(schedule, costs).makespan == pytest.approx(float(trace["end"].max()))


def test_from_trace_summarises_op_times_by_median_or_mean():
    # stage 0's forwards take 1, 1 and 4: median 1, mean 2
    rows = [(0, 0, mb, "F", "compute", 10.0 * mb, 10.0 * mb + d) for mb, d in enumerate((1.0, 1.0, 4.0))]
    rows += [(0, 0, mb, "B", "compute", 10.0 * mb + 5, 10.0 * mb + 7) for mb in range(3)]
    trace = pd.DataFrame(rows, columns=simulator.TRACE_COLUMNS)
    assert costs_from_trace(trace).t_f == pytest.approx((1.0,))
    assert costs_from_trace(trace, statistic="mean").t_f == pytest.approx((2.0,))
    with pytest.raises(ValueError, match="statistic"):
        costs_from_trace(trace, statistic="mode")


def test_model_share_splits_a_rank_share_over_its_chunks():
    costs = Costs.model_share(2, t_f=3.0, latency=1e-5)
    assert (costs.t_f, costs.t_i, costs.t_w, costs.act_memory, costs.latency) == (1.5, 0.5, 0.5, 0.5, 1e-5)


def test_host_time_around_ops_delays_the_next_op_and_keeps_op_times():
    """1F1B, p = 2, m = 4, unit compute, 0.1 s links; hand-worked rank 1: its first RECV
    lands at 1 + 0.01 + 0.02 + 0.1 (rank 0's F, its dispatch, its SEND's) and F starts
    0.03 later (the RECV's); B follows F after 0.01; the SEND_B is posted after 0.02 more."""
    schedule = schedules.build("1f1b", ranks=2, microbatches=4)
    plain = Costs(t_f=1.0, t_i=1.0, t_w=1.0, latency=0.1)
    host = Costs(t_f=1.0, t_i=1.0, t_w=1.0, latency=0.1, dispatch_compute=0.01, dispatch_send=0.02,
                 dispatch_recv=0.03)
    assert not plain.dispatches and host.dispatches
    before, after = simulator.simulate(schedule, plain), simulator.simulate(schedule, host)
    rank1 = after.trace[after.trace["rank"] == 1].reset_index(drop=True)
    assert list(rank1["kind"][:4]) == ["RECV_F", "F", "B", "SEND_B"]
    assert rank1.loc[0, "end"] == pytest.approx(1.13)
    assert (rank1.loc[1, "start"], rank1.loc[1, "end"]) == (pytest.approx(1.16), pytest.approx(2.16))
    assert (rank1.loc[2, "start"], rank1.loc[2, "end"]) == (pytest.approx(2.17), pytest.approx(4.17))
    assert rank1.loc[3, "start"] == pytest.approx(4.20)
    compute = after.trace[after.trace["stream"] == "compute"]
    assert ((compute["end"] - compute["start"]).round(9).isin([1.0, 2.0]) | (compute["kind"] == "OPTIMIZER")).all()
    assert after.makespan > before.makespan and after.bubble_fraction > before.bubble_fraction
    assert simulator.simulate(schedule, Costs(t_f=1.0, t_i=1.0, t_w=1.0, latency=0.1)).makespan == before.makespan


def test_host_time_of_sends_after_a_receive_goes_to_the_next_op():
    """ZB-H1's rank 1 receives a gradient and sends one between two compute ops: the
    send's host time then delays the op after them, not the one before."""
    schedule = schedules.build("zb-h1", ranks=2, microbatches=4)
    costs = Costs(t_f=1.0, t_i=1.0, t_w=1.0, dispatch_send=0.25)
    result = simulator.simulate(schedule, costs)
    free = simulator.simulate(schedule, Costs(t_f=1.0, t_i=1.0, t_w=1.0))
    assert result.makespan > free.makespan
    compute = result.trace[(result.trace["stream"] == "compute") & (result.trace["kind"] != "OPTIMIZER")]
    assert ((compute["end"] - compute["start"]).round(9) == 1.0).all()


def test_scaled_without_ops_scales_only_the_host_time():
    """A sleeping profile's canary drift moves the host's time, not its sleeps."""
    costs = simulator.Costs(t_f=1.0, t_i=0.5, t_w=0.5, t_b=1.0, optimizer_time=0.1, dispatch_compute=1e-4)
    both, host = costs.scaled(2.0), costs.scaled(2.0, ops=False)
    assert both.t_f == 2.0 and both.t_b == 2.0 and both.optimizer_time == pytest.approx(0.2)
    assert host.t_f == 1.0 and host.t_i == 0.5 and host.t_w == 0.5 and host.t_b == 1.0
    assert host.optimizer_time == pytest.approx(0.2) and host.dispatch_compute == pytest.approx(2e-4)
