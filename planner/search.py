"""The search: enumerate layouts, reject what does not fit, rank by a closed form, simulate the best.

1. Enumerate (:mod:`planner.space`) tp x pp x dp = GPUs, each microbatch size with
   m = global batch / dp / b whole, every schedule with each chunk count it accepts,
   the layer splits, recomputation, sequence parallelism and optimizer sharding.
2. Memory (:mod:`planner.memory`) is exact before any simulation: layouts over the cap
   are rejected, naming the part that overflows. Weights, gradients and optimizer state
   need no schedule, so a layout they alone put over the cap is rejected before its
   schedule is built (its activations then read 0). Schedules found by a search under a
   memory limit (ZB-1p, ZB-2p, zb-auto, V-Half, V-Min: :mod:`planner.shapes`) are built only
   when simulated; before that their activations are their limit's, which the search
   never exceeds.
3. The pre-filter estimate of the step time is ``m x (slowest rank's F + I + W per
   microbatch) / (1 - bubble)`` plus 2 (S - 1) boundary transfers, the slowest rank's
   gradient all-reduce and the optimizer step. The bubble is the closed form of
   :mod:`schedules.analytic` at the stages' mean costs where there is one, else that of
   the schedules' dry run at those uniform costs (for a large m at the two counts below,
   past the fill and drain the idle time no longer grows with m); ZB-1p and ZB-2p (and
   zb-auto) take ZB-H1's and ZB-H2's, V-Half and V-Min 1F1B's.
4. The ``top`` best estimates, and the best of every schedule, are simulated with SimPy
   (links, all-reduce, optimizer included), in the given :class:`simulator.workers.Workers`.

How schedules are built, placed and continued to a large m: :mod:`planner.shapes`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import schedules
from schedules import analytic
from simulator import Costs, simulate
from simulator.workers import Workers

from .layout import Layout, Stages, link_costs, optimizer_time, simulator_costs, stage_costs
from .memory import RankMemory, rank_memory
from .shapes import (EXACT_OPS, affine, built_for, built_lazily, extrapolate, memory_limit, placement, proxy,
                     registered, sizes, uniform_bubble)
from .space import PlanConfig, enumerate_layouts
from .transformer import TransformerSpec

__all__ = ["PlanConfig", "Candidate", "Plan", "Search", "EXACT_OPS", "spec_for", "sizes", "extrapolate", "placement", "evaluate",
           "evaluate_group", "simulate_layout", "plan", "build_schedule", "ranked"]


@dataclass(frozen=True)
class Candidate:
    """A layout after the pre-filter."""

    layout: Layout
    memory: RankMemory
    """The rank with the most memory."""
    overflow: str | None
    """The part that breaks the cap, or None if the layout fits."""
    estimate: float
    """Closed-form step time (s)."""


@dataclass(frozen=True)
class Plan:
    """A simulated layout: the planner's answer for it."""

    layout: Layout
    step_time: float
    bubble_fraction: float
    memory: RankMemory
    estimate: float
    tokens_per_s: float
    mfu: float
    """Model FLOPs (no recomputation) per second over the GPUs' peak."""
    tflops_per_gpu: float = math.nan
    """Hardware FLOPs (recomputation counted, Megatron-LM's count) per second per GPU, in TFLOP/s."""
    samples_per_gpu_per_s: float = math.nan
    """Sequences per second per GPU."""

    def row(self) -> dict:
        """The --json / --csv record."""
        lay = self.layout
        return {"schedule": lay.schedule, "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "chunks": lay.chunks,
                "microbatches": lay.microbatches, "microbatch_size": lay.microbatch_size,
                "split": lay.split, "recompute": lay.recompute, "sequence_parallel": lay.sequence_parallel,
                "distributed_optimizer": lay.distributed_optimizer, "step_time": self.step_time,
                "bubble_fraction": self.bubble_fraction, "peak_memory_bytes": self.memory.total,
                "peak_memory_rank": self.memory.rank, "tokens_per_s": self.tokens_per_s,
                "samples_per_gpu_per_s": self.samples_per_gpu_per_s, "tflops_per_gpu": self.tflops_per_gpu,
                "mfu": self.mfu, "estimated_step_time": self.estimate,
                **{f"{k}_bytes": v for k, v in self.memory.parts.items()}}


@dataclass
class Search:
    """Everything one search found (see :func:`plan`)."""

    plans: list[Plan]
    """Simulated layouts, best (shortest step) first."""
    candidates: list[Candidate]
    """Every enumerated layout with its memory and estimate."""
    skipped: list[str] = field(default_factory=list)
    """Combinations no schedule could take, with the reason."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of the enumeration and of the simulations."""

    @property
    def fitting(self) -> list[Candidate]:
        return [c for c in self.candidates if c.overflow is None]


@lru_cache(maxsize=64)
def spec_for(model: TransformerSpec, b: int) -> TransformerSpec:
    """``model`` at microbatch size ``b`` (cached: the search asks for it per layout)."""
    return model if model.microbatch_size == b else replace(model, microbatch_size=b)


def _slowest_hop(spec: TransformerSpec, layout: Layout, links: dict) -> float:
    """Seconds of one boundary transfer on the slowest pipeline link (0 without a pipeline)."""
    if layout.stages == 1:
        return 0.0
    bw, lat = links["bandwidth"], links["latency"]
    bw = min(bw.values()) if isinstance(bw, dict) else bw
    lat = max(lat.values()) if isinstance(lat, dict) else lat
    return lat + spec.boundary_bytes(layout.tp) / bw


def ranked(plan: Plan) -> tuple:
    """The order plans are listed in: by step time; on a tie a schedule not built for costs
    first (it runs the same whatever was measured: ZB-1p often matches ZB-H1 at uniform
    costs), then by layout."""
    return plan.step_time, schedules.spec(plan.layout.schedule).costed, plan.layout


def build_schedule(config: PlanConfig, layout: Layout) -> schedules.Schedule:
    """The layout's whole schedule (one built for costs built for the layout's)."""
    spec, stages, optimizer = _prepare(config, layout)
    return _schedule_at(layout, layout.microbatches, simulator_costs(spec, layout, config.machine, stages, optimizer))


def _prepare(config: PlanConfig, layout: Layout) -> tuple[TransformerSpec, Stages, float]:
    """The model at the layout's microbatch size, its stages' costs and the optimizer step
    of its heaviest rank."""
    spec = spec_for(config.model, layout.microbatch_size)
    stages = stage_costs(spec, layout, config.machine)
    heaviest = max(sum(stages.params[s] for s in own) for own in placement(layout.schedule, layout.pp, layout.chunks))
    return spec, stages, optimizer_time(spec, layout, config.machine.gpu, heaviest)


def _activation_peaks(layout: Layout, stages: Stages, where) -> list[float]:
    """Each rank's activation peak: from the op order, or a searched schedule's memory limit."""
    if built_lazily(layout.schedule):
        limit = memory_limit(layout.schedule, layout.pp)
        return [limit * max(stages.act_memory[s] for s in own) for own in where]
    name, pp, m, v = layout.schedule, layout.pp, layout.microbatches, layout.chunks
    at = sizes(name, pp, m, v)
    found = [registered(name, pp, k, v)[1].peaks(stages.act_memory) for k in at]
    if len(at) > 1 and not all(affine(at, list(rank)) for rank in zip(*found)):
        return registered(name, pp, m, v)[1].peaks(stages.act_memory)
    return [extrapolate(m, at, list(rank)) for rank in zip(*found)]


def evaluate(config: PlanConfig, layout: Layout) -> Candidate:
    """Memory and closed-form estimate of one layout."""
    spec, stages, optimizer = _prepare(config, layout)
    where = placement(layout.schedule, layout.pp, layout.chunks)
    links = link_costs(layout, config.machine)
    worst = max(rank_memory(spec, layout, where, stages, None), key=lambda r: r.total)
    if worst.overflow(config.memory_cap) is None:
        worst = max(rank_memory(spec, layout, where, stages, _activation_peaks(layout, stages, where)),
                    key=lambda r: r.total)
    overflow = worst.overflow(config.memory_cap)
    estimate = _estimate(spec, layout, stages, links, optimizer, where, exact=overflow is None)
    return Candidate(layout, worst, overflow, estimate)


RATIO_STEP = 0.2
"""I / F and W / F are rounded to this before a dry run: nearby layouts share one."""


def _estimate(spec: TransformerSpec, layout: Layout, stages: Stages, links: dict, optimizer: float, where,
              exact: bool = True) -> float:
    """The pre-filter's step time (see the module docstring); without ``exact`` (a layout
    already over the cap, only plotted) a schedule with no closed form takes interleaved
    1F1B's, (p - 1) / (m v + p - 1), instead of a dry run."""
    S = layout.stages
    f, i, w = (sum(t) / S for t in (stages.t_f, stages.t_i, stages.t_w))
    ratios = tuple(round(x / f / RATIO_STEP) * RATIO_STEP for x in (f, i, w))
    name, p, m, v = proxy(layout.schedule), layout.pp, layout.microbatches, layout.chunks
    try:
        bubble = analytic.bubble_fraction(name, p, m, v, *ratios)
    except ValueError:
        bubble = uniform_bubble(name, p, m, v, ratios) if exact else (p - 1) / (m * v + p - 1)
    per_mb = max(sum(stages.t_f[s] + stages.t_i[s] + stages.t_w[s] for s in own) for own in where)
    hops = 2 * (S - 1) * _slowest_hop(spec, layout, links)
    ring = Costs(grad_bytes=tuple(spec.dtype_bytes * n for n in stages.params), dp=layout.dp,
                 dp_bandwidth=links["dp_bandwidth"], dp_latency=links["dp_latency"])  # the simulator's all-reduce
    reduce = max(sum(ring.reduce_time(s, S) for s in own) for own in where)
    return layout.microbatches * per_mb / (1 - bubble) + hops + reduce + optimizer


def _schedule_at(layout: Layout, m: int, costs: Costs) -> schedules.Schedule:
    """The layout's schedule at ``m`` microbatches; one built for costs for its mean stage
    and slowest hop (:meth:`simulator.Costs.stage_costs`)."""
    if schedules.spec(layout.schedule).costed:
        return built_for(layout.schedule, layout.pp, m, costs.stage_costs(layout.stages))
    return registered(layout.schedule, layout.pp, m, layout.chunks)[0]


def simulate_layout(job: tuple[PlanConfig, Layout, float]) -> Plan:
    """One SimPy run of a layout, or two and an extrapolation for a large m (a top-level
    function, so process pools and MPI can ship it)."""
    config, layout, estimate = job
    spec, stages, optimizer = _prepare(config, layout)
    costs = simulator_costs(spec, layout, config.machine, stages, optimizer)
    m = layout.microbatches
    at = sizes(layout.schedule, layout.pp, m, layout.chunks)[:2]
    runs = [simulate(_schedule_at(layout, k, costs), costs, config.comm) for k in at]
    step = extrapolate(m, at, [r.makespan for r in runs])
    busy = sum(extrapolate(m, at, list(rank)) for rank in zip(*(r.busy for r in runs)))
    where = placement(layout.schedule, layout.pp, layout.chunks)
    if len(at) == 1:
        peaks = [p.bytes for p in runs[0].peak_memory]
    elif built_lazily(layout.schedule):  # built at two counts: their peaks, continued
        peaks = [extrapolate(m, at, [p.bytes for p in rank]) for rank in zip(*(r.peak_memory for r in runs))]
    else:
        peaks = _activation_peaks(layout, stages, where)
    worst = max(rank_memory(spec, layout, where, stages, peaks), key=lambda r: r.total)
    machine = config.machine
    model_flops, hardware_flops = spec.iteration_flops(config.global_batch, layout.recompute)
    return Plan(layout, step, 1.0 - busy / (layout.pp * step), worst, estimate,
                tokens_per_s=config.global_batch * spec.seq / step,
                mfu=model_flops / step / (machine.gpus * machine.gpu.peak_flops),
                tflops_per_gpu=hardware_flops / step / machine.gpus / 1e12,
                samples_per_gpu_per_s=config.global_batch / step / machine.gpus)


def evaluate_group(job: tuple[PlanConfig, list[Layout]]) -> list[Candidate]:
    """:func:`evaluate` for layouts of one schedule and depth (a top-level function, so
    process pools and MPI can ship it): one process builds their schedules once."""
    config, layouts = job
    return [evaluate(config, lay) for lay in layouts]


def plan(config: PlanConfig, workers: Workers, progress: bool = False) -> Search:
    """Enumerate, pre-filter and simulate (see the module docstring). The pre-filter runs
    in ``workers`` too, one job per schedule and depth."""
    began = time.perf_counter()
    skipped: list[str] = []
    layouts = enumerate_layouts(config, skipped)
    groups: dict[tuple, list[Layout]] = {}
    for lay in layouts:
        groups.setdefault((lay.schedule, lay.pp, lay.chunks), []).append(lay)
    found = workers.map(evaluate_group, [(config, group) for group in groups.values()], progress=progress,
                        desc="pre-filter")
    evaluated = {c.layout: c for group in found for c in group}
    candidates = [evaluated[lay] for lay in layouts]
    enumerated = time.perf_counter()
    fitting = sorted((c for c in candidates if c.overflow is None), key=lambda c: (c.estimate, c.layout))
    chosen = fitting[:config.top]
    for name in dict.fromkeys(c.layout.schedule for c in fitting):
        best = next(c for c in fitting if c.layout.schedule == name)
        if best not in chosen:
            chosen.append(best)
    plans = workers.map(simulate_layout, [(config, c.layout, c.estimate) for c in chosen], progress=progress)
    plans = [p for p in plans if p.memory.overflow(config.memory_cap) is None]
    plans.sort(key=ranked)
    done = time.perf_counter()
    return Search(plans, candidates, skipped, {"enumerate": enumerated - began, "simulate": done - enumerated})
