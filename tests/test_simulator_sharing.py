"""Processor sharing (ranks of one node, compute under communication) against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schedules
import simulator
from simulator import Costs, model

UNIT = dict(t_f=1.0, t_i=1.0, t_w=1.0)  # F = 1, B = 2


def _compute(result: simulator.SimResult) -> dict[tuple[int, str, int], tuple[float, float]]:
    """(rank, kind, mb) -> (start, end) of every compute op, to 1e-9 s."""
    rows = result.trace[result.trace["stream"] == "compute"]
    return {(r.rank, r.kind, r.mb): (round(r.start, 9), round(r.end, 9)) for r in rows.itertuples()}


def test_two_ranks_on_one_node_at_half_rate_when_both_compute():
    # 1f1b, p = 2, m = 2. Alone: rank 0 F0 [0,1] F1 [1,2] B0 [4,6] B1 [7,9]; rank 1 F0 [1,2]
    # B0 [2,4] F1 [4,5] B1 [5,7]. Sharing one node at share[2] = 0.5:
    #   [0,1] r0 F0 alone.  [1,3] r0 F1 and r1 F0 both at 0.5: 1 unit each takes 2.
    #   [3,5] r1 B0 alone (r0 waits for its gradient).
    #   [5,7] r1 F1 (1 unit at 0.5) beside r0 B0, which has 1 of its 2 units done at 7.
    #   [7,9] r1 B1 starts beside r0 B0; r0 B0 ends at 9; r1 B1 has 1 unit done, then
    #   runs alone at rate 1 (a rate change in mid-op): ends at 10.  [10,12] r0 B1 alone.
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    shared = simulator.simulate(schedule, Costs(**UNIT, ranks_per_node=2, share=(1.0, 0.5)))
    assert _compute(shared) == {
        (0, "F", 0): (0, 1), (0, "F", 1): (1, 3), (0, "B", 0): (5, 9), (0, "B", 1): (10, 12),
        (1, "F", 0): (1, 3), (1, "B", 0): (3, 5), (1, "F", 1): (5, 7), (1, "B", 1): (7, 10),
    }
    assert shared.makespan == pytest.approx(12.0)
    assert simulator.simulate(schedule, Costs(**UNIT)).makespan == 9.0


def test_ranks_on_different_nodes_do_not_share():
    schedule = schedules.build("zb-h1", ranks=4, microbatches=8)
    alone = simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.6, t_w=0.4))
    apart = simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.6, t_w=0.4, share=(1.0, 0.5)))  # a node each
    by_map = simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.6, t_w=0.4, node_of=(0, 1, 2, 3), share=(1.0,)))
    assert apart.makespan == alone.makespan == by_map.makespan
    assert apart.trace[["start", "end"]].equals(alone.trace[["start", "end"]])


def test_a_rate_table_of_ones_keeps_results_exactly():
    schedule = schedules.build("interleaved-1f1b", ranks=4, microbatches=8)
    links = dict(act_bytes=1e6, bandwidth=1e8, latency=1e-3)
    plain = simulator.simulate(schedule, Costs(**links))
    ones = Costs(**links, ranks_per_node=4, share=(1.0,) * 4)
    assert not ones.shares_processors
    assert simulator.simulate(schedule, ones).trace.equals(plain.trace)


def test_four_ranks_on_two_cores_are_twice_as_slow_when_all_compute():
    # naive: one microbatch at a time, so never two ranks busy at once: no slowdown.
    two_cores = Costs(**UNIT, ranks_per_node=4, share=(1.0, 1.0, 2 / 3, 0.5))
    naive = schedules.build("naive", ranks=4, microbatches=2)
    assert simulator.simulate(naive, two_cores).makespan == simulator.simulate(naive, Costs(**UNIT)).makespan
    gpipe = schedules.build("gpipe", ranks=4, microbatches=8)
    assert simulator.simulate(gpipe, two_cores).makespan > simulator.simulate(gpipe, Costs(**UNIT)).makespan


def test_compute_slows_while_its_own_transfers_are_in_flight():
    # gpipe, p = 2, m = 2, F = 1, B = 1, every transfer takes 1 s, comm_interference 0.5:
    #   r0 F0 [0,1]; its SEND_F0 flies [1,2], so r0 F1 (from 1) runs at 0.5 until 2 and
    #   then at 1: ends 2.5. r1 F0 starts at 2 alone; SEND_F1 flies [2.5,3.5] into r1, so
    #   r1 F0 has 0.5 done at 2.5 and the rest at 0.5: ends 3.5. r1 F1 [3.5,4.5], B0
    #   [4.5,5.5]; SEND_B0 flies [5.5,6.5] beside r1 B1: 0.5 done by 6.5, ends 7.
    #   r0 B0 from 6.5; SEND_B1 flies [7,8] into r0: ends 8. r0 B1 [8,9].
    schedule = schedules.build("gpipe", ranks=2, microbatches=2)
    result = simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.5, t_w=0.5, latency=1.0, comm_interference=0.5))
    assert _compute(result) == {
        (0, "F", 0): (0, 1), (0, "F", 1): (1, 2.5), (0, "B", 0): (6.5, 8), (0, "B", 1): (8, 9),
        (1, "F", 0): (2, 3.5), (1, "F", 1): (3.5, 4.5), (1, "B", 0): (4.5, 5.5), (1, "B", 1): (5.5, 7),
    }
    free = simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.5, t_w=0.5, comm_interference=0.5))
    assert free.makespan == simulator.simulate(schedule, Costs(t_f=1.0, t_i=0.5, t_w=0.5)).makespan


def test_the_optimizer_step_shares_the_node_too():
    # naive p = 2, m = 1: both ranks step together at the end, 1 s alone each, 2 s at 0.5.
    schedule = schedules.build("naive", ranks=2, microbatches=1)
    costs = Costs(**UNIT, optimizer_time=1.0, ranks_per_node=2, share=(1.0, 0.5))
    result = simulator.simulate(schedule, costs)
    assert result.makespan == pytest.approx(simulator.simulate(schedule, Costs(**UNIT)).makespan + 2.0)


def test_per_rank_optimizer_time_and_a_fused_backward():
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    result = simulator.simulate(schedule, Costs(**UNIT, t_b=1.5, optimizer_time=[0.25, 0.5]))
    trace = result.trace
    assert set((trace.loc[trace["kind"] == "B", "end"] - trace.loc[trace["kind"] == "B", "start"]).round(9)) == {1.5}
    steps = trace[trace["kind"] == "OPTIMIZER"]
    assert list((steps["end"] - steps["start"]).round(9)) == [0.25, 0.5]
    assert Costs(**UNIT, t_b=1.5).closed_form_bubble("1f1b", 2, 2) is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(ranks_per_node=2, share=(1.0,)), "share has 1 entries but a node holds 2"),
    (dict(ranks_per_node=2, node_of=(0, 0)), "ranks_per_node or node_of"),
    (dict(node_of=(0, 0, 1)), "node_of has 3 entries for 2 world ranks"),
    (dict(comm_interference=1.0), "comm_interference must be within"),
    (dict(share=(1.0, 0.0)), "share must be > 0"),
    (dict(share=0.5), "share must be a list"),
    (dict(optimizer_time=[1.0, 2.0, 3.0]), "optimizer_time has 3 values"),
])
def test_bad_placement_or_rates_fail_in_one_line(kwargs, message):
    schedule = schedules.build("1f1b", ranks=2, microbatches=2)
    with pytest.raises(ValueError, match=message):
        simulator.simulate(schedule, Costs(**kwargs))


# ---- oracle: the plain processor-sharing model, every op re-timed at every change ----------

class _RetimeEveryOp:
    """Reference for :class:`simulator.sharing.Sharing` (same interface): on each change,
    every op of the node is re-timed with a fresh timeout, the textbook way."""

    def __init__(self, env, costs, num_ranks):
        self.env, self.costs, self.node = env, costs, costs.nodes(num_ranks)
        self.busy = dict.fromkeys(self.node, 0)
        self.inflight, self.jobs = [0] * num_ranks, [None] * num_ranks
        self.slow, self.interferes = 1 - costs.comm_interference, costs.comm_interference > 0

    def compute(self, rank, work):
        done = self.env.event()
        self.jobs[rank] = {"left": work, "rate": 0.0, "since": 0.0, "timer": None, "done": done}
        self.busy[self.node[rank]] += 1
        self._retime_node(self.node[rank])
        return done

    def release(self, rank):
        """Nothing to do: this oracle counts a rank idle the moment its op ends."""

    def transfer(self, src, dst, delta):
        for rank in (src, dst):
            self.inflight[rank] += delta
            self._retime(rank)

    def _retime_node(self, node):
        for rank, where in enumerate(self.node):
            if where == node:
                self._retime(rank)

    def _retime(self, rank):
        job, now = self.jobs[rank], self.env.now
        if job is None:
            return
        rate = self.costs.rate(self.busy[self.node[rank]]) * (self.slow if self.inflight[rank] else 1.0)
        job["left"] = max(job["left"] - (now - job["since"]) * job["rate"], 0.0)
        job["since"], job["rate"] = now, rate
        timer = job["timer"] = self.env.timeout(job["left"] / rate)
        timer.callbacks.append(lambda event, rank=rank: self._end(rank, event))

    def _end(self, rank, timer):
        job = self.jobs[rank]
        if job is None or timer is not job["timer"]:
            return
        self.jobs[rank] = None
        self.busy[self.node[rank]] -= 1
        self._retime_node(self.node[rank])
        job["done"].succeed()


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv"]),
       p=st.sampled_from([2, 4]), m=st.sampled_from([2, 4, 8]), per_node=st.sampled_from([1, 2, 4]),
       rates=st.lists(st.floats(0.2, 1.0), min_size=4, max_size=4),
       interference=st.sampled_from([0.0, 0.3]), comm=st.sampled_from(schedules.COMM_MODES))
def test_virtual_clocks_agree_with_re_timing_every_op(name, p, m, per_node, rates, interference, comm):
    try:
        schedule = schedules.build(name, ranks=p, microbatches=m)
    except schedules.ScheduleError:
        return
    costs = Costs(t_f=1.0, t_i=0.7, t_w=0.4, latency=0.3, optimizer_time=0.5, ranks_per_node=per_node,
                  share=[1.0] + rates[1:], comm_interference=interference)
    fast = simulator.simulate(schedule, costs, comm)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "Sharing", _RetimeEveryOp)
        slow = simulator.simulate(schedule, costs, comm)
    assert np.allclose(fast.trace[["start", "end"]], slow.trace[["start", "end"]], rtol=1e-9, atol=1e-9)


def test_data_parallel_replicas_on_the_node_load_it_too():
    # naive p = 2, m = 1: one pipeline rank computes at a time. With dp = 2 on 4 world
    # ranks of one node, its replica computes at the same moments: 2 busy, rate 0.5, so
    # every op takes twice as long. With 2 ranks a node, replica 1 has a node of its own.
    schedule = schedules.build("naive", ranks=2, microbatches=1)
    alone = simulator.simulate(schedule, Costs(**UNIT, dp=2)).makespan
    rates = (1.0, 0.5, 0.4, 0.3)
    assert simulator.simulate(schedule, Costs(**UNIT, dp=2, ranks_per_node=4, share=rates)).makespan == \
        pytest.approx(2 * alone)
    assert simulator.simulate(schedule, Costs(**UNIT, dp=2, ranks_per_node=2, share=rates)).makespan == alone
    # world ranks 0 and 2 (rank 0 of both replicas) on node 0, ranks 1 and 3 on node 1
    assert simulator.simulate(schedule, Costs(**UNIT, dp=2, node_of=(0, 1, 0, 1), share=rates)).makespan == \
        pytest.approx(2 * alone)
    with pytest.raises(ValueError, match="node_of has 2 entries for 4 world ranks"):
        simulator.simulate(schedule, Costs(**UNIT, dp=2, node_of=(0, 0), share=rates))
