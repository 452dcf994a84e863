"""The search: enumerate layouts, reject what does not fit, rank by a closed form, simulate the best.

1. Enumerate pp x dp = GPUs (pp a divisor), each microbatch size with m = global batch /
   dp / b whole, every registered schedule (``schedules.names()``, so new ones join) with
   each chunk count it accepts, both layer splits and both recomputation settings.
2. Memory (:mod:`planner.memory`) is exact before any simulation: layouts over the cap
   are rejected, naming the part that overflows.
3. The pre-filter estimate of the step time is ``m x (slowest rank's F + I + W per
   microbatch) / (1 - bubble)`` plus 2 (S - 1) boundary transfers, the slowest rank's
   gradient all-reduce and the optimizer step. The bubble is the closed form of
   :mod:`schedules.analytic` at the stages' mean costs where there is one, else that of
   the schedules' dry run at those uniform costs (done once per schedule shape).
4. The ``top`` best estimates, and the best of every schedule, are simulated with SimPy
   (links, all-reduce, optimizer included), in the given :class:`simulator.workers.Workers`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

from tqdm import tqdm

import schedules
from schedules import COMPUTE_KINDS, OpKind, analytic
from simulator import Costs, simulate
from simulator.workers import Workers

from .layout import Layout, Machine, Stages, link_costs, simulator_costs, stage_costs, stage_layers
from .memory import RankMemory, order_trace, rank_memory
from .transformer import TransformerSpec

__all__ = ["PlanConfig", "Candidate", "Plan", "Search", "spec_for", "enumerate_layouts", "evaluate", "simulate_layout", "plan"]


@dataclass(frozen=True)
class PlanConfig:
    """What to plan for and how widely to search."""

    model: TransformerSpec
    """The transformer (its microbatch_size is replaced by each of ``microbatch_sizes``)."""
    machine: Machine
    """GPUs, nodes, links and efficiency."""
    global_batch: int
    """Sequences per optimizer step, over all replicas."""
    memory_cap: float
    """Bytes a rank may use."""
    microbatch_sizes: tuple[int, ...] = (1,)
    """Microbatch sizes b to try."""
    schedule_names: tuple[str, ...] = ()
    """Schedules to try; empty: every registered one."""
    chunks: tuple[int, ...] = (1, 2, 3, 4)
    """Chunk counts to try, each where the schedule accepts it."""
    splits: tuple[str, ...] = ("uniform", "balanced")
    """Layer splits to try."""
    recompute: tuple[str, ...] = ("none", "full")
    """Recomputation settings to try."""
    top: int = 10
    """Layouts (best estimates) to simulate with SimPy, besides the best of each schedule."""
    comm: str = "async"
    """Communication semantics of the simulation."""


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

    def row(self) -> dict:
        """The --json / --csv record."""
        lay = self.layout
        return {"schedule": lay.schedule, "pp": lay.pp, "dp": lay.dp, "chunks": lay.chunks,
                "microbatches": lay.microbatches, "microbatch_size": lay.microbatch_size,
                "split": lay.split, "recompute": lay.recompute, "step_time": self.step_time,
                "bubble_fraction": self.bubble_fraction, "peak_memory_bytes": self.memory.total,
                "peak_memory_rank": self.memory.rank, "tokens_per_s": self.tokens_per_s, "mfu": self.mfu,
                "estimated_step_time": self.estimate,
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


@lru_cache(maxsize=None)
def _accepts(name: str, chunks: int) -> bool:
    try:
        schedules.build(name, ranks=2, microbatches=8, chunks=chunks)
    except schedules.ScheduleError:
        return False
    return True


@lru_cache(maxsize=256)
def _schedule(name: str, pp: int, m: int, v: int) -> tuple[schedules.Schedule, object]:
    schedule = schedules.build(name, ranks=pp, microbatches=m, chunks=v)
    return schedule, order_trace(schedule)


@lru_cache(maxsize=None)
def _uniform_bubble(name: str, pp: int, m: int, v: int, ratios: tuple[float, float, float]) -> float:
    """Bubble at uniform stage costs with free communication: the closed form, else the
    schedules' own dry run at those costs (no SimPy, O(ops))."""
    try:
        return analytic.bubble_fraction(name, pp, m, v, *ratios)
    except ValueError:
        pass
    schedule, _ = _schedule(name, pp, m, v)
    cost = {OpKind.F: ratios[0], OpKind.I: ratios[1], OpKind.W: ratios[2], OpKind.B: ratios[1] + ratios[2]}
    span = schedules.dry_run(schedules.validate(schedule, "async"), "async", cost).makespan
    busy = sum(cost[part.kind] for _, op in schedule for part in op.parts if part.kind in COMPUTE_KINDS)
    return 1.0 - busy / (pp * span) if span else 0.0


def enumerate_layouts(config: PlanConfig, skipped: list[str] | None = None) -> list[Layout]:
    """Every layout the search considers, in a fixed order."""
    skipped = [] if skipped is None else skipped
    gpus, L = config.machine.gpus, config.model.layers
    names = config.schedule_names or tuple(schedules.names())
    out = []
    for pp in (d for d in range(1, gpus + 1) if gpus % d == 0):
        dp = gpus // pp
        for b in config.microbatch_sizes:
            if config.global_batch % (dp * b):
                skipped.append(f"pp={pp} dp={dp} b={b}: global batch {config.global_batch} is not a multiple of dp x b")
                continue
            m = config.global_batch // (dp * b)
            for name in names:
                for v in (v for v in config.chunks if _accepts(name, v)):
                    if pp * v > L:
                        skipped.append(f"{name} pp={pp} v={v}: {pp * v} stages for {L} layers")
                        continue
                    try:
                        _schedule(name, pp, m, v)
                    except schedules.ScheduleError as err:
                        skipped.append(f"{name} pp={pp} m={m} v={v}: {str(err).splitlines()[0]}")
                        continue
                    splits = [s for s in config.splits
                              if s == "uniform" or "uniform" not in config.splits
                              or stage_layers(config.model, pp * v, s) != stage_layers(config.model, pp * v, "uniform")]
                    out += [Layout(name, pp, dp, v, m, b, split, rc) for split in splits for rc in config.recompute]
    return out


def _optimizer_time(spec: TransformerSpec, machine: Machine, params: float) -> float:
    """The Adam step streams the whole state in and out once: 2 x state bytes / HBM bandwidth."""
    return 2 * spec.state_bytes_per_param * params / machine.gpu.hbm_bandwidth


def _prepare(config: PlanConfig, layout: Layout) -> tuple[TransformerSpec, Stages, schedules.Schedule, Costs]:
    spec = spec_for(config.model, layout.microbatch_size)
    stages = stage_costs(spec, layout, config.machine)
    schedule, _ = _schedule(layout.schedule, layout.pp, layout.microbatches, layout.chunks)
    heaviest = max(sum(stages.params[s] for s in schedule.stages_of(r)) for r in range(layout.pp))
    costs = simulator_costs(spec, layout, config.machine, stages, _optimizer_time(spec, config.machine, heaviest))
    return spec, stages, schedule, costs


@lru_cache(maxsize=64)
def spec_for(model: TransformerSpec, b: int) -> TransformerSpec:
    """``model`` at microbatch size ``b`` (cached: the search asks for it per layout)."""
    return model if model.microbatch_size == b else replace(model, microbatch_size=b)


def evaluate(config: PlanConfig, layout: Layout) -> Candidate:
    """Memory and closed-form estimate of one layout."""
    spec, stages, schedule, costs = _prepare(config, layout)
    trace = _schedule(layout.schedule, layout.pp, layout.microbatches, layout.chunks)[1]
    worst = max(rank_memory(spec, schedule, stages, layout.recompute, trace, costs.w_memory_fraction),
                key=lambda r: r.total)
    S = layout.stages
    mean = tuple(round(sum(t) / S / (sum(stages.t_f) / S), 6) for t in (stages.t_f, stages.t_i, stages.t_w))
    bubble = _uniform_bubble(layout.schedule, layout.pp, layout.microbatches, layout.chunks, mean)
    per_mb = max(sum(stages.t_f[s] + stages.t_i[s] + stages.t_w[s] for s in schedule.stages_of(r))
                 for r in range(layout.pp))
    links = link_costs(layout, config.machine)
    bw, lat = (links["bandwidth"], links["latency"])
    bw = min(bw.values()) if isinstance(bw, dict) else bw
    lat = max(lat.values()) if isinstance(lat, dict) else lat
    hops = 2 * (S - 1) * (lat + spec.boundary_bytes() / bw) if layout.pp > 1 else 0.0
    reduce = max(sum(costs.reduce_time(s, S) for s in schedule.stages_of(r)) for r in range(layout.pp))
    estimate = layout.microbatches * per_mb / (1 - bubble) + hops + reduce + costs.optimizer_time
    return Candidate(layout, worst, worst.overflow(config.memory_cap), estimate)


def simulate_layout(job: tuple[PlanConfig, Layout, float]) -> Plan:
    """One SimPy run of a layout (a top-level function, so process pools and MPI can ship it)."""
    config, layout, estimate = job
    spec, stages, schedule, costs = _prepare(config, layout)
    result = simulate(schedule, costs, config.comm)
    worst = max(rank_memory(spec, schedule, stages, layout.recompute, result.trace, costs.w_memory_fraction),
                key=lambda r: r.total)
    machine = config.machine
    tokens_per_s = config.global_batch * spec.seq / result.makespan
    mfu = spec.flops_per_token() * tokens_per_s / (machine.gpus * machine.gpu.peak_flops)
    return Plan(layout, result.makespan, result.bubble_fraction, worst, estimate, tokens_per_s, mfu)


def plan(config: PlanConfig, workers: Workers, progress: bool = False) -> Search:
    """Enumerate, pre-filter and simulate (see the module docstring)."""
    began = time.perf_counter()
    skipped: list[str] = []
    layouts = enumerate_layouts(config, skipped)
    candidates = [evaluate(config, lay) for lay in tqdm(layouts, desc="pre-filter", disable=not progress,
                                                        file=sys.stderr)]
    enumerated = time.perf_counter()
    fitting = sorted((c for c in candidates if c.overflow is None), key=lambda c: (c.estimate, c.layout))
    chosen = fitting[:config.top]
    for name in dict.fromkeys(c.layout.schedule for c in fitting):
        best = next(c for c in fitting if c.layout.schedule == name)
        if best not in chosen:
            chosen.append(best)
    plans = workers.map(simulate_layout, [(config, c.layout, c.estimate) for c in chosen], progress=progress)
    plans.sort(key=lambda p: (p.step_time, p.layout))
    done = time.perf_counter()
    return Search(plans, candidates, skipped, {"enumerate": enumerated - began, "simulate": done - enumerated})
