"""The search: layer splits, placement, exact memory, rejection and ranking."""

from __future__ import annotations

import dataclasses

import pytest

import schedules
import simulator
from planner import GPUS, LINKS, MODELS, Layout, Machine, PlanConfig, enumerate_layouts, plan, stage_layers
from planner.hardware import GIB
from planner.layout import link_costs, simulator_costs, stage_costs
from planner.memory import RankMemory, order_trace, rank_memory
from planner.search import evaluate, simulate_layout
from simulator.workers import Workers

LLAMA = MODELS["llama3-8b"]
GPT3 = MODELS["gpt3-175b"]


def _machine(gpus: int = 8, per_node: int = 8, efficiency: float = 0.6) -> Machine:
    return Machine(GPUS["a100-80gb"], gpus, per_node, LINKS["nvlink"], LINKS["infiniband"], efficiency)


def _config(**kw) -> PlanConfig:
    base = dict(model=LLAMA, machine=_machine(), global_batch=64, memory_cap=80 * GIB)
    return PlanConfig(**{**base, **kw})


@pytest.mark.parametrize("stages", [1, 3, 7, 32])
def test_uniform_split_uses_every_layer_evenly(stages):
    layers = stage_layers(LLAMA, stages, "uniform")
    assert sum(layers) == LLAMA.layers and max(layers) - min(layers) <= 1


def test_balanced_split_unloads_the_head_stage_and_is_no_slower():
    machine = _machine()
    for stages in (4, 8, 16):
        costs = {}
        for split in ("uniform", "balanced"):
            lay = Layout("1f1b", stages, 1, 1, 8, 1, split, "none")
            st = stage_costs(LLAMA, lay, machine)
            costs[split] = max(f + i + w for f, i, w in zip(st.t_f, st.t_i, st.t_w))
            assert sum(st.layers) == LLAMA.layers and min(st.layers) >= 1
        assert costs["balanced"] <= costs["uniform"] + 1e-12
    # llama3-8b's head (V = 128256) costs about 1.3 layers: the last stage gets fewer
    layers = stage_layers(LLAMA, 8, "balanced")
    assert layers[-1] < layers[0]
    with pytest.raises(ValueError, match="stages for 32 layers"):
        stage_layers(LLAMA, 33, "uniform")


def test_pipeline_inside_a_node_uses_nvlink_and_across_nodes_infiniband():
    inside = link_costs(Layout("1f1b", 8, 4, 1, 8, 1, "uniform", "none"), _machine(32, 8))
    assert inside["bandwidth"] == LINKS["nvlink"].bandwidth
    assert inside["dp_bandwidth"] == LINKS["infiniband"].bandwidth  # 8 x 4 GPUs span 4 nodes
    across = link_costs(Layout("1f1b", 16, 2, 1, 8, 1, "uniform", "none"), _machine(32, 8))
    assert across["bandwidth"][(7, 8)] == LINKS["infiniband"].bandwidth
    assert across["bandwidth"][(6, 7)] == LINKS["nvlink"].bandwidth
    small = link_costs(Layout("1f1b", 2, 2, 1, 8, 1, "uniform", "none"), _machine(4, 8))
    assert small["dp_bandwidth"] == LINKS["nvlink"].bandwidth


@pytest.mark.parametrize("name", schedules.names())
def test_memory_from_the_op_order_equals_the_simulated_peak(name):
    """The pre-filter's memory needs no SimPy run: it is the simulator's, exactly."""
    v = schedules.default_chunks(name)
    lay = Layout(name, 4, 1, v, 8, 1, "balanced", "none")
    spec = dataclasses.replace(LLAMA, layers=16)
    st = stage_costs(spec, lay, _machine())
    schedule = schedules.build(name, ranks=4, microbatches=8, chunks=v)
    costs = simulator_costs(spec, lay, _machine(), st, optimizer_time=0.0)
    sim = simulator.simulate(schedule, costs)
    by_order = rank_memory(spec, schedule, st, "none", order_trace(schedule))
    by_sim = rank_memory(spec, schedule, st, "none", sim.trace)
    assert [r.parts for r in by_order] == [r.parts for r in by_sim]
    assert [r.parts["activations"] for r in by_sim] == pytest.approx([p.bytes for p in sim.peak_memory])


def test_one_rank_one_replica_step_is_the_sum_of_its_ops():
    lay = Layout("1f1b", 1, 1, 1, 4, 1, "uniform", "none")
    config = _config(machine=_machine(1), global_batch=4, memory_cap=1e15)
    result = simulate_layout((config, lay, 0.0))
    st = stage_costs(LLAMA, lay, config.machine)
    opt = 2 * 16 * LLAMA.params() / GPUS["a100-80gb"].hbm_bandwidth
    assert result.step_time == pytest.approx(4 * (st.t_f[0] + st.t_i[0] + st.t_w[0]) + opt)
    assert result.bubble_fraction == pytest.approx(0.0, abs=1e-12)  # the optimizer step counts as busy
    assert result.memory.parts["weights"] == 2 * LLAMA.params()


def test_overflow_names_the_part_that_crosses_the_cap():
    mem = RankMemory(0, {"weights": 10, "gradients": 10, "optimizer": 60, "activations": 30, "buffers": 1})
    assert mem.overflow(200) is None
    assert mem.overflow(100) == "activations"
    assert mem.overflow(15) == "gradients"


def test_enumeration_covers_the_registry_and_respects_the_batch():
    layouts = enumerate_layouts(_config())
    assert {lay.schedule for lay in layouts} == set(schedules.names())
    for lay in layouts:
        assert lay.pp * lay.dp == 8 and lay.dp * lay.microbatches * lay.microbatch_size == 64
        assert lay.stages <= LLAMA.layers


def test_search_ranks_fitting_simulated_layouts():
    search = plan(_config(top=4), Workers("serial"))
    assert search.plans and all(p.memory.total <= 80 * GIB for p in search.plans)
    assert [p.step_time for p in search.plans] == sorted(p.step_time for p in search.plans)
    fitting = sorted(search.fitting, key=lambda c: c.estimate)
    simulated = {p.layout for p in search.plans}
    assert all(c.layout in simulated for c in fitting[:4])  # the top estimates were simulated
    for p in search.plans[:4]:  # the closed form is a good guide to the simulation
        assert p.estimate == pytest.approx(p.step_time, rel=0.1)
    rejected = [c for c in search.candidates if c.overflow]
    assert rejected and all(c.memory.total > 80 * GIB for c in rejected)
    best = search.plans[0]
    assert 0 < best.mfu < 0.6 and best.tokens_per_s == pytest.approx(64 * LLAMA.seq / best.step_time)


def test_gpt3_needs_deep_pipelines_and_recomputation():
    """PP x DP alone: 16 bytes x 175e9 parameters fit 80 GiB only from about 35 ranks on."""
    config = PlanConfig(GPT3, _machine(1024, 8), 1536, 80 * GIB, top=2, schedule_names=("1f1b",))
    cands = [evaluate(config, lay) for lay in enumerate_layouts(config)]
    assert {c.layout.pp for c in cands if c.overflow is None} == {64}
    assert all(c.layout.recompute == "full" for c in cands if c.overflow is None)
    shallow = [c for c in cands if c.layout.pp <= 16]
    assert shallow and all(c.overflow in ("weights", "gradients", "optimizer") for c in shallow)
