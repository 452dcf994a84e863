"""Time-sliced cores (:mod:`simulator.slicing`): round robin by hand, and fluid sharing
as the slice shrinks to nothing."""

from __future__ import annotations

import pytest
import simpy

import schedules
import simulator
from simulator.slicing import Slicing


def _ends(costs: simulator.Costs, works: list[float], ranks: int) -> list[float]:
    env = simpy.Environment()
    slicing = Slicing(env, costs, ranks)
    ends = [0.0] * len(works)

    def rank(r: int, work: float):
        yield slicing.compute(r, work)
        ends[r] = env.now

    for r, work in enumerate(works):
        env.process(rank(r, work))
    env.run()
    return ends


def test_two_ranks_on_one_core_take_turns_a_slice_at_a_time():
    costs = simulator.Costs(cores=1, slice_s=0.25, ranks_per_node=2)
    # rank 0 runs [0, .25], rank 1 [.25, .5], ... rank 0's last quarter ends at 1.75, rank 1's at 2
    assert _ends(costs, [1.0, 1.0], 2) == pytest.approx([1.75, 2.0])


def test_a_short_op_ends_within_its_first_slice():
    costs = simulator.Costs(cores=1, slice_s=0.5, ranks_per_node=2)
    assert _ends(costs, [0.2, 1.0], 2) == pytest.approx([0.2, 1.2])


def test_three_ranks_on_two_cores():
    costs = simulator.Costs(cores=2, slice_s=1.0, ranks_per_node=3)
    # 0 and 1 run [0, 1]; at 1 both slices end and one rank waits: 0 gives way to 2, 1
    # runs on and ends at 1.5, when 0 takes its core back for its last 0.5 (ends at 2);
    # 2 runs from 1, its slice ends at 2 with nobody waiting, and it ends at 2.5.
    assert _ends(costs, [1.5, 1.5, 1.5], 3) == pytest.approx([2.0, 1.5, 2.5])


def test_share_sets_the_nodes_throughput():
    # 4 ranks, 2 cores, share 0.4 with 4 computing: per-core rate 0.4 * 4 / 2 = 0.8
    costs = simulator.Costs(cores=2, slice_s=1e-4, ranks_per_node=4, share=(1.0, 1.0, 0.6, 0.4))
    ends = _ends(costs, [1.0] * 4, 4)
    assert max(ends) == pytest.approx(4 * 1.0 / (2 * 0.8), rel=1e-3)


@pytest.mark.parametrize("name", ["1f1b", "gpipe", "zb-h1"])
def test_a_tiny_slice_is_fluid_sharing(name):
    schedule = schedules.build(name, ranks=4, microbatches=8)
    share = (1.0, 1.0, 2 / 3, 0.5)  # two cores: no loss to switching
    fluid = simulator.Costs(t_f=1.0, t_i=1.0, t_w=1.0, ranks_per_node=4, share=share)
    sliced = simulator.Costs(t_f=1.0, t_i=1.0, t_w=1.0, ranks_per_node=4, share=share, cores=2, slice_s=1e-4)
    assert sliced.time_sliced(4) and not fluid.time_sliced(4)
    a, b = simulator.simulate(schedule, fluid).makespan, simulator.simulate(schedule, sliced).makespan
    assert b == pytest.approx(a, rel=0.01)


def test_cores_enough_for_every_rank_change_nothing():
    schedule = schedules.build("1f1b", ranks=4, microbatches=8)
    plain = simulator.Costs(t_f=1.0, t_i=1.0, t_w=2.0, ranks_per_node=4)
    roomy = simulator.Costs(t_f=1.0, t_i=1.0, t_w=2.0, ranks_per_node=4, cores=4)
    assert not roomy.time_sliced(4)
    assert simulator.simulate(schedule, roomy).makespan == simulator.simulate(schedule, plain).makespan


def test_slices_change_the_step_where_ops_are_as_long_as_slices():
    schedule = schedules.build("1f1b", ranks=4, microbatches=8)
    share = (1.0, 1.0, 2 / 3, 0.5)
    fluid = simulator.simulate(schedule, simulator.Costs(ranks_per_node=4, share=share)).makespan
    sliced = simulator.simulate(schedule, simulator.Costs(ranks_per_node=4, share=share, cores=2,
                                                          slice_s=1.0)).makespan
    assert sliced != pytest.approx(fluid, rel=1e-3)
    assert sliced >= 8 * 3 * 4 / 2  # never faster than both cores busy throughout


def test_bad_cores_and_slices_are_refused():
    with pytest.raises(ValueError, match="cores"):
        simulator.Costs(cores=0)
    with pytest.raises(ValueError, match="slice_s"):
        simulator.Costs(slice_s=0.0)
