"""The search: enumerate layouts, reject what does not fit, rank by a closed form, simulate the best.

1. Enumerate (:mod:`planner.space`) tp x pp x dp = GPUs, each microbatch size with
   m = global batch / dp / b whole, every schedule with each chunk count it accepts,
   the layer splits, recomputation, sequence parallelism and optimizer sharding.
2. Memory (:mod:`planner.memory`) is exact before any simulation: layouts over the cap
   are rejected, naming the part that overflows. Weights, gradients and optimizer state
   need no schedule, so a layout they alone put over the cap is rejected before its
   schedule is built (its activations then read 0). Schedules found by a search under a
   memory limit (ZB-1p, ZB-2p, V-Half, V-Min: :mod:`planner.synthesized`) are built only
   when simulated; before that their activations are their limit's, which the search
   never exceeds.
3. The pre-filter estimate of the step time is ``m x (slowest rank's F + I + W per
   microbatch) / (1 - bubble)`` plus 2 (S - 1) boundary transfers, the slowest rank's
   gradient all-reduce and the optimizer step. The bubble is the closed form of
   :mod:`schedules.analytic` at the stages' mean costs where there is one, else that of
   the schedules' dry run at those uniform costs (for a large m at the two counts below,
   past the fill and drain the idle time no longer grows with m); ZB-1p and ZB-2p take
   ZB-H1's and ZB-H2's, V-Half and V-Min 1F1B's.
4. The ``top`` best estimates, and the best of every schedule, are simulated with SimPy
   (links, all-reduce, optimizer included), in the given :class:`simulator.workers.Workers`.

Large m: a schedule of more than ``EXACT_OPS`` compute ops (3 m x stages) is built at
three smaller microbatch counts of the same structure as m (multiples of the same
microbatches per round g = m / (m // pp), or of pp plus the same remainder), 2g, 3g and
4g, and its activation peaks continued affinely to m: past the fill the peak either stays
(1F1B and its kin) or grows by the same bytes per microbatch (GPipe, looped BFS). Where the
third count disagrees with the line through the first two the schedule is built at m
after all, so the memory stays exact; ``tests/test_planner_search.py`` checks it for every
schedule. A simulation of such a layout runs at the first two counts and continues the
step time and busy time the same way (past the fill every further microbatch adds the
same work), so the work per layout stays bounded however large m is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import schedules
from schedules import COMPUTE_KINDS, OpKind, analytic
from simulator import Costs, simulate
from simulator.workers import Workers

from . import synthesized
from .layout import Layout, Stages, link_costs, optimizer_time, simulator_costs, stage_costs
from .memory import OrderPeaks, RankMemory, rank_memory
from .space import PlanConfig, enumerate_layouts
from .transformer import TransformerSpec

__all__ = ["PlanConfig", "Candidate", "Plan", "Search", "EXACT_OPS", "spec_for", "sizes", "extrapolate", "placement", "evaluate",
           "evaluate_group", "simulate_layout", "plan", "build_schedule"]


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


EXACT_OPS = 60_000
"""Compute ops up to which a schedule is built and simulated at its own microbatch count."""


def sizes(name: str, pp: int, m: int, v: int) -> tuple[int, ...]:
    """The microbatch counts a layout is built at: (m,) up to ``EXACT_OPS`` compute ops,
    else three smaller counts of the same structure (see the module docstring) that the
    schedule takes, or (m,) when there are none."""
    if 3 * m * pp * v <= EXACT_OPS:
        return (m,)
    rounds = m // pp
    group = m // rounds if rounds and m % rounds == 0 else pp
    for unit, rest in ((group, 0), (pp, m % pp)):
        at = (2 * unit + rest, 3 * unit + rest, 4 * unit + rest)
        if at[-1] < m and (synthesized.is_synthesized(name)
                           or all(schedules.registry.accepts(name, pp, k, v) for k in at)):
            return at
    return (m,)


def extrapolate(m: int, at: tuple[int, ...], values: list[float]) -> float:
    """``values`` measured at the counts ``at``, continued affinely to ``m`` through the first two."""
    if len(at) == 1:
        return values[0]
    (m1, m2), (y1, y2) = at[:2], values[:2]
    return y1 + (m - m1) * (y2 - y1) / (m2 - m1)


def _affine(at: tuple[int, ...], values: list[float]) -> bool:
    """Whether the third value lies on the line through the first two."""
    return math.isclose(extrapolate(at[2], at, values), values[2], rel_tol=1e-9, abs_tol=1e-9)


@lru_cache(maxsize=256)
def _registered(name: str, pp: int, m: int, v: int) -> tuple[schedules.Schedule, OrderPeaks]:
    schedule = schedules.build(name, ranks=pp, microbatches=m, chunks=v)
    return schedule, OrderPeaks(schedule)


def _looping(p: int, v: int) -> tuple[int, ...]:
    return tuple(s % p for s in range(p * v))


def _v_shape(p: int, v: int) -> tuple[int, ...]:
    return tuple(s if s < p else 2 * p - 1 - s for s in range(p * v))


@lru_cache(maxsize=None)
def placement(name: str, pp: int, v: int) -> tuple[tuple[int, ...], ...]:
    """The stages of each rank. Every placement in use is looping (stage s on rank s mod p)
    or a V (s on rank s, then 2p - 1 - s): which one is read off a build at three ranks,
    so a large pipeline is not built just to learn it; anything else is read off a build
    at the real size."""
    if synthesized.is_synthesized(name):
        where = tuple(range(pp))
    else:
        small = next((m for m in range(6, 64) if schedules.registry.accepts(name, 3, m, v)), None)
        seen = schedules.build(name, ranks=3, microbatches=small, chunks=v).stage_to_rank if small else None
        if seen == _looping(3, v):
            where = _looping(pp, v)
        elif seen == _v_shape(3, v):
            where = _v_shape(pp, v)
        else:
            where = schedules.build(name, ranks=pp, microbatches=2 * pp, chunks=v).stage_to_rank
    return tuple(tuple(s for s, r in enumerate(where) if r == rank) for rank in range(pp))


def _slowest_hop(spec: TransformerSpec, layout: Layout, links: dict) -> float:
    """Seconds of one boundary transfer on the slowest pipeline link (0 without a pipeline)."""
    if layout.stages == 1:
        return 0.0
    bw, lat = links["bandwidth"], links["latency"]
    bw = min(bw.values()) if isinstance(bw, dict) else bw
    lat = max(lat.values()) if isinstance(lat, dict) else lat
    return lat + spec.boundary_bytes(layout.tp) / bw


def _timing(spec: TransformerSpec, layout: Layout, stages: Stages, links: dict) -> synthesized.Timing:
    """Mean stage costs and the slowest hop: what ZB-1p and ZB-2p are synthesized for."""
    S = len(stages.t_f)
    return synthesized.Timing(sum(stages.t_f) / S, sum(stages.t_i) / S, sum(stages.t_w) / S,
                              _slowest_hop(spec, layout, links))


def build_schedule(config: PlanConfig, layout: Layout) -> schedules.Schedule:
    """The layout's whole schedule (a synthesized one timed with the layout's stage costs)."""
    spec, stages, _ = _prepare(config, layout)
    if synthesized.is_synthesized(layout.schedule):
        timing = _timing(spec, layout, stages, link_costs(layout, config.machine))
        return synthesized.build(layout.schedule, layout.pp, layout.microbatches, 1, timing)
    return schedules.build(layout.schedule, ranks=layout.pp, microbatches=layout.microbatches, chunks=layout.chunks)


@lru_cache(maxsize=256)
def _lowered(name: str, pp: int, m: int, v: int) -> tuple[schedules.Lowered, dict]:
    """The validated (lowered) schedule and its compute ops by kind: what a dry run needs,
    once per schedule whatever the costs."""
    schedule = _registered(name, pp, m, v)[0]
    counts: dict = {}
    for _, op in schedule:
        for part in op.parts:
            if part.kind in COMPUTE_KINDS:
                counts[part.kind] = counts.get(part.kind, 0) + 1
    return schedules.validate(schedule, "async"), counts


@lru_cache(maxsize=None)
def _uniform_bubble(name: str, pp: int, m: int, v: int, ratios: tuple[float, float, float]) -> float:
    """Bubble at uniform stage costs with free communication, from the schedules' own dry
    run at those costs (no SimPy, O(ops)); for a large m at the two counts the memory is
    read at, the makespan extrapolated (see the module docstring)."""
    cost = {OpKind.F: ratios[0], OpKind.I: ratios[1], OpKind.W: ratios[2], OpKind.B: ratios[1] + ratios[2]}
    at = sizes(name, pp, m, v)[:2]
    spans, busy = [], []
    for k in at:
        lowered, counts = _lowered(name, pp, k, v)
        spans.append(schedules.dry_run(lowered, "async", cost).makespan)
        busy.append(sum(n * cost[kind] for kind, n in counts.items()))
    span, work = extrapolate(m, at, spans), extrapolate(m, at, busy)
    return 1.0 - work / (pp * span) if span else 0.0


def _prepare(config: PlanConfig, layout: Layout) -> tuple[TransformerSpec, Stages, float]:
    """The model at the layout's microbatch size, its stages' costs and the optimizer step
    of its heaviest rank."""
    spec = spec_for(config.model, layout.microbatch_size)
    stages = stage_costs(spec, layout, config.machine)
    heaviest = max(sum(stages.params[s] for s in own) for own in placement(layout.schedule, layout.pp, layout.chunks))
    return spec, stages, optimizer_time(spec, layout, config.machine.gpu, heaviest)


def _activation_peaks(layout: Layout, stages: Stages, where) -> list[float]:
    """Each rank's activation peak: from the op order, or a searched schedule's memory limit."""
    if synthesized.built_lazily(layout.schedule):
        limit = synthesized.memory_limit(layout.schedule, layout.pp)
        return [limit * max(stages.act_memory[s] for s in own) for own in where]
    name, pp, m, v = layout.schedule, layout.pp, layout.microbatches, layout.chunks
    at = sizes(name, pp, m, v)
    found = [_registered(name, pp, k, v)[1].peaks(stages.act_memory) for k in at]
    if len(at) > 1 and not all(_affine(at, list(rank)) for rank in zip(*found)):
        return _registered(name, pp, m, v)[1].peaks(stages.act_memory)
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
    name, p, m, v = synthesized.proxy(layout.schedule), layout.pp, layout.microbatches, layout.chunks
    try:
        bubble = analytic.bubble_fraction(name, p, m, v, *ratios)
    except ValueError:
        bubble = _uniform_bubble(name, p, m, v, ratios) if exact else (p - 1) / (m * v + p - 1)
    per_mb = max(sum(stages.t_f[s] + stages.t_i[s] + stages.t_w[s] for s in own) for own in where)
    hops = 2 * (S - 1) * _slowest_hop(spec, layout, links)
    ring = Costs(grad_bytes=tuple(spec.dtype_bytes * n for n in stages.params), dp=layout.dp,
                 dp_bandwidth=links["dp_bandwidth"], dp_latency=links["dp_latency"])  # the simulator's all-reduce
    reduce = max(sum(ring.reduce_time(s, S) for s in own) for own in where)
    return layout.microbatches * per_mb / (1 - bubble) + hops + reduce + optimizer


def _schedule_at(config: PlanConfig, layout: Layout, m: int, spec: TransformerSpec, stages: Stages) -> schedules.Schedule:
    if synthesized.is_synthesized(layout.schedule):
        timing = _timing(spec, layout, stages, link_costs(layout, config.machine))
        return synthesized.build(layout.schedule, layout.pp, m, 1, timing)
    return _registered(layout.schedule, layout.pp, m, layout.chunks)[0]


def simulate_layout(job: tuple[PlanConfig, Layout, float]) -> Plan:
    """One SimPy run of a layout, or two and an extrapolation for a large m (a top-level
    function, so process pools and MPI can ship it)."""
    config, layout, estimate = job
    spec, stages, optimizer = _prepare(config, layout)
    costs = simulator_costs(spec, layout, config.machine, stages, optimizer)
    m = layout.microbatches
    at = sizes(layout.schedule, layout.pp, m, layout.chunks)[:2]
    runs = [simulate(_schedule_at(config, layout, k, spec, stages), costs, config.comm) for k in at]
    step = extrapolate(m, at, [r.makespan for r in runs])
    busy = sum(extrapolate(m, at, list(rank)) for rank in zip(*(r.busy for r in runs)))
    where = placement(layout.schedule, layout.pp, layout.chunks)
    if len(at) == 1:
        peaks = [p.bytes for p in runs[0].peak_memory]
    elif synthesized.built_lazily(layout.schedule):  # built at two counts: their peaks, continued
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
    plans.sort(key=lambda p: (p.step_time, p.layout))
    done = time.perf_counter()
    return Search(plans, candidates, skipped, {"enumerate": enumerated - began, "simulate": done - enumerated})
