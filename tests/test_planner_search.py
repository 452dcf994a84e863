"""The search: layer splits, placement, exact memory, what is enumerated, rejection and ranking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import schedules
import simulator
from planner import GPUS, LINKS, MODELS, Layout, Machine, PlanConfig, enumerate_layouts, plan, stage_layers
from planner import search as search_module, shapes
from planner.hardware import GIB
from planner.layout import dp_ring, link_costs, optimizer_time, parse_split, simulator_costs, stage_costs
from planner.memory import OrderPeaks, RankMemory, placement_of, rank_memory
from planner.search import evaluate, extrapolate, placement, simulate_layout, sizes
from simulator.workers import Workers

LLAMA = MODELS["llama3-8b"]
GPT3 = MODELS["gpt3-175b"]


def _machine(gpus: int = 8, per_node: int = 8) -> Machine:
    return Machine(GPUS["a100-80gb"], gpus, per_node, LINKS["nvlink"], LINKS["infiniband"])


def _config(**kw) -> PlanConfig:
    base = dict(model=LLAMA, machine=_machine(), global_batch=64, memory_cap=80 * GIB)
    return PlanConfig(**{**base, **kw})


@pytest.mark.parametrize("stages", [1, 3, 7, 32])
def test_uniform_split_uses_every_layer_evenly(stages):
    layers = stage_layers(LLAMA, stages, "uniform")
    assert sum(layers) == LLAMA.layers and max(layers) - min(layers) <= 1


def test_balanced_split_unloads_the_end_stages_and_is_no_slower():
    machine = _machine()
    for stages in (4, 8, 16):
        costs = {}
        for split in ("uniform", "balanced"):
            st = stage_costs(LLAMA, Layout("1f1b", stages, 1, 1, 8, 1, split, "none"), machine)
            costs[split] = max(f + i + w for f, i, w in zip(st.t_f, st.t_i, st.t_w))
            assert sum(st.layers) == LLAMA.layers and min(st.layers) >= 1
        assert costs["balanced"] <= costs["uniform"] + 1e-12
    # llama3-8b's head (V = 128256) costs more than a layer: the last stage gets fewer
    layers = stage_costs(LLAMA, Layout("1f1b", 8, 1, 1, 8, 1, "balanced", "none"), machine).layers
    assert layers[-1] < layers[1]
    with pytest.raises(ValueError, match="stages for 32 layers"):
        stage_layers(LLAMA, 33, "uniform")


def test_an_explicit_split_is_taken_as_given_and_checked():
    spec = dataclasses.replace(LLAMA, layers=22)
    lay = Layout("1f1b", 8, 1, 1, 8, 1, "2,3,3,3,3,3,3,2", "none")
    assert stage_costs(spec, lay, _machine()).layers == (2, 3, 3, 3, 3, 3, 3, 2)
    for text, message in (("2,3", "2 stages given for 8"), ("2,3,3,3,3,3,3,3", "23 layers given"),
                          ("0,4,3,3,3,3,3,3", "at least one layer"), ("two,three", "layers per stage")):
        with pytest.raises(ValueError, match=message):
            parse_split(text, 8, 22)
    # interleaved, one layer a chunk: the first and the last chunk may hold the embedding or the
    # head alone (Megatron-LM's padding layers), a chunk in between may not
    padded = ",".join(["0"] + ["1"] * 22 + ["0"])
    lay = Layout("interleaved-1f1b", 8, 1, 3, 8, 1, padded, "none")
    st = stage_costs(spec, lay, _machine())
    assert st.layers[0] == st.layers[-1] == 0 and sum(st.layers) == 22 and st.t_f[0] > 0 < st.t_f[-1]
    with pytest.raises(ValueError, match="at least one layer"):
        parse_split(",".join(["1", "0"] + ["1"] * 22), 24, 22, chunks=3)


def test_tensor_ranks_are_adjacent_so_a_pipeline_leaves_the_node_once_tp_x_pp_exceeds_it():
    inside = link_costs(Layout("1f1b", 4, 2, 1, 8, 1, "uniform", "none", tp=2), _machine(16, 8))
    assert inside["bandwidth"] == LINKS["nvlink"].bandwidth
    across = link_costs(Layout("1f1b", 4, 1, 1, 8, 1, "uniform", "none", tp=4), _machine(16, 8))
    assert across["bandwidth"][(1, 2)] == LINKS["infiniband"].bandwidth  # GPUs 4 and 8: nodes 0 and 1
    assert across["bandwidth"][(0, 1)] == LINKS["nvlink"].bandwidth
    assert set(across["bandwidth"]) == {(0, 1), (1, 2), (2, 3), (0, 3)}  # neighbours and the wrap only


def test_the_data_parallel_ring_runs_on_every_nic_its_node_holds():
    ib, nv = LINKS["infiniband"].bandwidth, LINKS["nvlink"].bandwidth
    assert dp_ring(Layout("1f1b", 2, 4, 1, 8, 1, "uniform", "none"), _machine(8, 8))[0] == nv  # one node
    assert dp_ring(Layout("1f1b", 1, 64, 1, 8, 1, "uniform", "none"), _machine(64, 8))[0] == min(nv, 8 * ib)
    assert dp_ring(Layout("1f1b", 2, 32, 1, 8, 1, "uniform", "none"), _machine(64, 8))[0] == 4 * ib
    assert dp_ring(Layout("1f1b", 8, 8, 1, 8, 1, "uniform", "none", tp=8), _machine(512, 8))[0] == ib


@pytest.mark.parametrize("name", schedules.names())
def test_placement_is_the_schedules_own(name):
    for p in (2, 4, 5):
        v = schedules.default_chunks(name)
        built = schedules.build(name, ranks=p, microbatches=2 * p, chunks=v)
        assert placement(name, p, v) == placement_of(built)


@pytest.mark.parametrize("name", schedules.names())
def test_memory_from_the_op_order_equals_the_simulated_peak(name):
    """The pre-filter's memory needs no SimPy run: it is the simulator's, exactly."""
    v = schedules.default_chunks(name)
    lay = Layout(name, 4, 1, v, 8, 1, "balanced", "none", tp=2)
    spec = dataclasses.replace(LLAMA, layers=16)
    st = stage_costs(spec, lay, _machine())
    schedule = schedules.build(name, ranks=4, microbatches=8, chunks=v)
    sim = simulator.simulate(schedule, simulator_costs(spec, lay, _machine(), st, optimizer=0.0))
    by_order = OrderPeaks(schedule).peaks(st.act_memory)
    assert by_order == pytest.approx([p.bytes for p in sim.peak_memory], rel=1e-12)
    where = placement_of(schedule)
    assert [r.parts for r in rank_memory(spec, lay, where, st, by_order)] == \
        [pytest.approx(r.parts) for r in rank_memory(spec, lay, where, st, [p.bytes for p in sim.peak_memory])]


@pytest.mark.parametrize("name", [n for n in schedules.names() if not shapes.built_lazily(n)])  # limits: no order
def test_peaks_for_a_large_m_are_exact(name, monkeypatch):
    """Beyond EXACT_OPS the peaks come from three smaller builds continued affinely, or from
    a build at m where the three disagree: either way the exact peaks."""
    monkeypatch.setattr(shapes, "EXACT_OPS", 0)
    v = 3 if name in ("interleaved-1f1b", "looped-bfs", "interleaved-zb") else schedules.default_chunks(name)
    spec = dataclasses.replace(LLAMA, layers=32)
    extrapolated = 0
    for p in (3, 4):
        for m in (5 * p + 1, 7 * p, 9 * p + 2):
            if not schedules.registry.accepts(name, p, m, v):
                continue
            lay = Layout(name, p, 1, v, m, 1, "balanced", "none")
            st = stage_costs(spec, lay, _machine())
            exact = OrderPeaks(schedules.build(name, ranks=p, microbatches=m, chunks=v)).peaks(st.act_memory)
            assert search_module._activation_peaks(lay, st, placement(name, p, v)) == pytest.approx(exact, rel=1e-9)
            extrapolated += len(sizes(name, p, m, v)) == 3
    assert extrapolated or name == "naive"


def test_a_large_m_is_simulated_at_two_smaller_counts_and_continued(monkeypatch):
    lay = Layout("1f1b", 4, 1, 1, 40, 1, "uniform", "none")
    config = _config(model=dataclasses.replace(LLAMA, layers=8), machine=_machine(4), global_batch=40)
    exact = simulate_layout((config, lay, 0.0))
    monkeypatch.setattr(shapes, "EXACT_OPS", 0)
    assert sizes("1f1b", 4, 40, 1) == (8, 12, 16)
    continued = simulate_layout((config, lay, 0.0))
    assert continued.step_time == pytest.approx(exact.step_time, rel=1e-9)
    assert continued.bubble_fraction == pytest.approx(exact.bubble_fraction, rel=1e-9)
    assert continued.memory.total == pytest.approx(exact.memory.total, rel=1e-12)
    assert extrapolate(10, (2, 4), [1.0, 3.0]) == 9.0 and extrapolate(7, (7,), [2.5]) == 2.5


def test_one_rank_one_replica_step_is_the_sum_of_its_ops():
    lay = Layout("1f1b", 1, 1, 1, 4, 1, "uniform", "none")
    config = _config(machine=_machine(1), global_batch=4, memory_cap=1e15)
    result = simulate_layout((config, lay, 0.0))
    st = stage_costs(LLAMA, lay, config.machine)
    opt = optimizer_time(LLAMA, lay, GPUS["a100-80gb"], st.params[0])
    assert opt == pytest.approx(2 * 16 * LLAMA.params() / (2.039e12 * 0.88), rel=0.01)  # padded vocab
    assert result.step_time == pytest.approx(4 * (st.t_f[0] + st.t_i[0] + st.t_w[0]) + opt)
    assert result.bubble_fraction == pytest.approx(0.0, abs=1e-12)  # the optimizer step counts as busy
    assert result.memory.parts["weights"] == 2 * st.params[0]


def test_tensor_parallelism_and_a_distributed_optimizer_divide_what_they_shard():
    config = PlanConfig(GPT3, _machine(1024), 1536, 1e15)
    base = Layout("1f1b", 8, 16, 1, 96, 1, "uniform", "none", tp=8)
    plain = evaluate(config, base).memory
    zero = evaluate(config, dataclasses.replace(base, distributed_optimizer=True)).memory
    assert zero.parts["optimizer"] == pytest.approx(plain.parts["optimizer"] / 16)
    assert zero.parts["weights"] == plain.parts["weights"]
    one = evaluate(config, dataclasses.replace(base, tp=1, dp=128)).memory
    assert plain.parts["weights"] == pytest.approx(one.parts["weights"] / 8, rel=0.01)
    st = stage_costs(GPT3, base, config.machine)
    assert optimizer_time(GPT3, zero_layout := dataclasses.replace(base, distributed_optimizer=True), GPUS["a100-80gb"],
                          st.params[0]) == pytest.approx(optimizer_time(GPT3, base, GPUS["a100-80gb"], st.params[0]) / 16)
    assert zero_layout.label().endswith("dist-opt")


def test_overflow_names_the_part_that_crosses_the_cap():
    mem = RankMemory(0, {"weights": 10, "gradients": 10, "optimizer": 60, "activations": 30, "buffers": 1})
    assert mem.overflow(200) is None
    assert mem.overflow(100) == "activations"
    assert mem.overflow(15) == "gradients"


def test_enumeration_covers_every_schedule_and_respects_the_batch():
    layouts = enumerate_layouts(_config())
    assert {lay.schedule for lay in layouts} == set(schedules.names()) - {"zb-auto"}  # zb-2p at its default cap
    for lay in layouts:
        assert lay.tp * lay.pp * lay.dp == 8 and lay.dp * lay.microbatches * lay.microbatch_size == 64
        assert lay.stages <= LLAMA.layers and LLAMA.heads % lay.tp == 0 and LLAMA.kv % lay.tp == 0
    assert {lay.tp for lay in layouts} == {1, 2, 4, 8}


def test_layouts_that_make_no_sense_are_not_listed():
    layouts = enumerate_layouts(_config())
    flat = [lay for lay in layouts if lay.pp == 1]
    assert flat and {(lay.schedule, lay.chunks) for lay in flat} == {("1f1b", 1)}  # not interleaved at pp = 1
    assert not any(lay.sequence_parallel for lay in layouts if lay.tp == 1)
    assert not any(lay.distributed_optimizer for lay in layouts)  # off unless asked for
    both = enumerate_layouts(_config(distributed_optimizer=(False, True)))
    assert not any(lay.distributed_optimizer for lay in both if lay.dp == 1)
    assert any(lay.distributed_optimizer for lay in both if lay.dp > 1)
    three_heads = dataclasses.replace(LLAMA, heads=12, kv_heads=12, hidden=3072)
    assert {lay.tp for lay in enumerate_layouts(_config(model=three_heads))} == {1, 2, 4}  # 12 heads


def test_pins_restrict_the_search():
    layouts = enumerate_layouts(_config(tp=(2,), pp=(2, 4), splits=("uniform",), recompute=("none",)))
    assert {(lay.tp, lay.pp, lay.dp) for lay in layouts} == {(2, 2, 2), (2, 4, 1)}
    skipped: list[str] = []
    assert enumerate_layouts(_config(tp=(3,)), skipped) == [] and "tp=3" in skipped[0]
    assert {lay.dp for lay in enumerate_layouts(_config(dp=(4,)))} == {4}


def test_search_ranks_fitting_simulated_layouts():
    search = plan(_config(top=4, tp=(1, 2), recompute=("none", "full")), Workers("serial"))
    assert search.plans and all(p.memory.total <= 80 * GIB for p in search.plans)
    assert [p.step_time for p in search.plans] == sorted(p.step_time for p in search.plans)
    fitting = sorted(search.fitting, key=lambda c: (c.estimate, c.layout))
    simulated = {p.layout for p in search.plans}
    assert all(c.layout in simulated for c in fitting[:4])  # the top estimates were simulated
    for p in search.plans[:4]:  # the closed form is a good guide to the simulation
        assert p.estimate == pytest.approx(p.step_time, rel=0.1)
    rejected = [c for c in search.candidates if c.overflow]
    assert rejected and all(c.memory.total > 80 * GIB for c in rejected)
    best = search.plans[0]
    assert 0 < best.mfu < 0.6 and best.tokens_per_s == pytest.approx(64 * LLAMA.seq / best.step_time)
    model, hardware = LLAMA.iteration_flops(64, best.layout.recompute)
    assert best.tflops_per_gpu == pytest.approx(hardware / best.step_time / 8 / 1e12)
    assert best.mfu == pytest.approx(model / best.step_time / 8 / 312e12)
    assert best.samples_per_gpu_per_s == pytest.approx(64 / best.step_time / 8)


def test_synthesized_schedules_stay_within_their_memory_limit():
    config = _config(model=dataclasses.replace(LLAMA, layers=16), machine=_machine(4), global_batch=16, tp=(1,),
                     pp=(4,), schedule_names=("zb-1p", "zb-2p"), splits=("uniform",), recompute=("none",), top=2,
                     memory_cap=1e15)
    search = plan(config, Workers("serial"))
    assert {p.layout.schedule for p in search.plans} == {"zb-1p", "zb-2p"}
    for p in search.plans:
        candidate = next(c for c in search.candidates if c.layout == p.layout)
        assert p.memory.parts["activations"] <= candidate.memory.parts["activations"] + 1e-6  # the bound holds
    two, one = (next(p for p in search.plans if p.layout.schedule == n) for n in ("zb-2p", "zb-1p"))
    assert two.step_time <= one.step_time + 1e-9  # twice the memory never schedules worse


def test_gpt3_without_tensor_parallelism_needs_deep_pipelines_and_recomputation():
    """PP x DP alone: 16 bytes x 175e9 parameters fit 80 GiB only from about 35 ranks on."""
    config = PlanConfig(GPT3, _machine(1024, 8), 1536, 80 * GIB, top=2, schedule_names=("1f1b",), tp=(1,),
                        recompute=("none", "selective", "full"))
    cands = [evaluate(config, lay) for lay in enumerate_layouts(config)]
    assert {c.layout.pp for c in cands if c.overflow is None} == {64}
    assert all(c.layout.recompute == "full" for c in cands if c.overflow is None)
    shallow = [c for c in cands if c.layout.pp <= 16]
    assert shallow and all(c.overflow in ("weights", "gradients", "optimizer") for c in shallow)


def test_with_tensor_parallelism_gpt3_fits_megatrons_layout():
    """Megatron-LM trained 175B-class models at tp 8, pp 8-16 with full recomputation: not over 80 GiB."""
    config = PlanConfig(GPT3, _machine(1024, 8), 1536, 80 * GIB, schedule_names=("1f1b", "interleaved-1f1b"),
                        tp=(8,), pp=(8, 16), recompute=("full",), sequence_parallel=(False,), chunks=(1, 2))
    cands = [evaluate(config, lay) for lay in enumerate_layouts(config)]
    assert cands and all(c.overflow is None for c in cands)
    assert max(c.memory.total for c in cands) < 80 * GIB
    peaks = np.array([c.memory.parts["activations"] for c in cands])
    assert (peaks > 0).all()
