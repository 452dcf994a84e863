"""``--profile costs.json``: plan for the model the executor ran, from what it measured.

The FLOPs model (:mod:`planner.transformer` at an assumed efficiency) is replaced by a
profile of ``python -m executor profile`` (format: :mod:`simulator.costs_json`). The search
shrinks to what the profile covers: pp x dp is the profile's world (its ``ranks``), and
for every profiled (ranks, chunks, microbatches, dp) each schedule that takes that many
chunks is one layout, costed by :meth:`simulator.Profile.costs` (per-stage F, I, W and B,
node sharing, links, optimizer, all-reduce) and simulated with SimPy. No closed-form
pre-filter is needed: a profile holds a handful of layouts, so every one is simulated.

The layer split is the one the profile measured (the executor's own, by parameter
count); recomputation is ``none`` (the executor keeps activations).

Memory per rank: weights and gradients are the ``grad_bytes`` of the rank's stages each
(the executor's weights and gradients share one dtype), no optimizer state (its SGD keeps
none), the simulator's activation peak from the profile's per-op bytes, and one receive
buffer per boundary that crosses ranks, in each direction.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import schedules
from simulator import Profile, ProfileError, simulate
from simulator.workers import Workers

from .layout import Layout
from .memory import RankMemory
from .options import OptionError
from .search import Candidate, Plan, Search, ranked

__all__ = ["ProfilePlanConfig", "SPLIT", "load_profile", "world_of", "rows_per_microbatch", "tokens_per_row",
           "enumerate_profiled", "simulate_profiled", "plan_profiled", "default_cap"]

SPLIT = "profiled"
"""The ``split`` of every profiled layout: the executor's stage bounds, as measured."""


@dataclass(frozen=True)
class ProfilePlanConfig:
    """What to plan for when the costs come from a profile."""

    profile: Profile
    """The checked costs.json."""
    memory_cap: float
    """Bytes a rank may use."""
    schedule_names: tuple[str, ...]
    """Schedules to try."""
    chunks: tuple[int, ...] = (1, 2, 3, 4)
    """Chunk counts to try (only those the profile holds can be costed)."""
    comm: str = "async"
    """Communication semantics of the simulation."""
    flops_per_row: float = float("nan")
    """Training FLOPs of one row (sequence) of the batch, for MFU; NaN: not known."""
    peak_flops: float = float("nan")
    """Peak FLOP/s of one rank's device, for MFU; NaN: not known."""


def load_profile(path: str) -> Profile:
    """The checked profile; a missing or malformed file is a usage error (one line, exit 2)."""
    try:
        return Profile.load(path)
    except ProfileError as err:
        raise OptionError(f"--profile: {str(err).splitlines()[0]}") from None


def world_of(profile: Profile) -> int:
    """World ranks the profile ran on: pipeline ranks x dp of every layout it holds."""
    return profile.conditions.ranks


def rows_per_microbatch(profile: Profile, dp: int, microbatches: int) -> int:
    """Rows (sequences) of one microbatch: the profiled batch over dp x m."""
    return int(profile.conditions.model["batch"]) // (dp * microbatches)


def tokens_per_row(profile: Profile) -> int:
    """Tokens a row carries: seq_len for the transformer, 1 for an MLP or a factory's model."""
    model = profile.conditions.model
    return int(model.get("seq_len", 1)) if model.get("model") == "transformer" else 1


def enumerate_profiled(config: ProfilePlanConfig, skipped: list[str]) -> list[Layout]:
    """Every (schedule, profiled layout) pair that builds, in a fixed order; the others go
    to ``skipped`` with the reason."""
    profile, world = config.profile, world_of(config.profile)
    out = []
    for ranks, chunks, m, dp in sorted(set(profile.layouts)):
        if ranks * dp != world:
            skipped.append(f"profiled layout ranks={ranks} dp={dp} is not the world of {world}")
            continue
        if chunks not in config.chunks:
            skipped.append(f"profiled chunks={chunks} not among --chunks {','.join(map(str, config.chunks))}")
            continue
        for name in config.schedule_names:
            try:
                schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks)
            except schedules.ScheduleError as err:
                skipped.append(f"{name} pp={ranks} m={m} v={chunks}: {str(err).splitlines()[0]}")
                continue
            out.append(Layout(name, ranks, dp, chunks, m, rows_per_microbatch(profile, dp, m), SPLIT, "none"))
    return out


def _memory(profile: Profile, layout: Layout, schedule: schedules.Schedule, peaks) -> RankMemory:
    """The rank with the most memory (see the module docstring)."""
    table = profile.layout(layout.pp, layout.chunks, layout.microbatches, layout.dp)
    grads = [float(s.grad_bytes or 0.0) for s in table.stages]
    boundary = table.boundary_bytes
    where = schedule.stage_to_rank
    buffers = [0.0] * layout.pp
    for s in range(schedule.num_stages - 1):
        if where[s] != where[s + 1]:
            buffers[where[s + 1]] += boundary[s]  # the forward input of stage s + 1
            buffers[where[s]] += boundary[s]  # the gradient coming back to stage s
    ranks = []
    for r in range(layout.pp):
        weights = sum(grads[s] for s in schedule.stages_of(r))
        ranks.append(RankMemory(r, {"weights": weights, "gradients": weights, "optimizer": 0.0,
                                    "activations": peaks[r].bytes, "buffers": buffers[r]}))
    return max(ranks, key=lambda x: x.total)


def simulate_profiled(job: tuple[ProfilePlanConfig, Layout]) -> Plan:
    """One SimPy run of a layout at the profile's costs (top-level: pools and MPI ship it)."""
    config, layout = job
    if schedules.spec(layout.schedule).costed:  # built for the profile's costs of the layout
        costs = config.profile.costs(ranks=layout.pp, chunks=1, microbatches=layout.microbatches, dp=layout.dp)
        schedule = schedules.build(layout.schedule, ranks=layout.pp, microbatches=layout.microbatches,
                                   costs=costs.stage_costs(layout.pp))
    else:
        schedule = schedules.build(layout.schedule, ranks=layout.pp, microbatches=layout.microbatches,
                                   chunks=layout.chunks)
        costs = config.profile.costs(schedule, dp=layout.dp)
    result = simulate(schedule, costs, config.comm)
    memory = _memory(config.profile, layout, schedule, result.peak_memory)
    rows = layout.dp * layout.microbatches * layout.microbatch_size
    tokens_per_s = rows * tokens_per_row(config.profile) / result.makespan
    world = layout.pp * layout.dp
    flops = config.flops_per_row * rows / result.makespan / world  # per GPU; the executor recomputes nothing
    return Plan(layout, result.makespan, result.bubble_fraction, memory, result.makespan, tokens_per_s,
                flops / config.peak_flops, flops / 1e12, rows / result.makespan / world)


def plan_profiled(config: ProfilePlanConfig, workers: Workers, progress: bool = False) -> Search:
    """Enumerate what the profile covers and simulate all of it; ``OptionError`` if it
    covers nothing the search asks for."""
    began = time.perf_counter()
    skipped: list[str] = []
    layouts = enumerate_profiled(config, skipped)
    if not layouts:
        have = ", ".join(f"ranks={r} chunks={c} m={m} dp={d}" for r, c, m, d in config.profile.layouts)
        why = skipped[0] if skipped else "no schedule given"
        raise OptionError(f"{config.profile.source} covers no layout to plan (it has {have}; e.g. {why})")
    enumerated = time.perf_counter()
    simulated = workers.map(simulate_profiled, [(config, lay) for lay in layouts], progress=progress)
    candidates = [Candidate(p.layout, p.memory, p.memory.overflow(config.memory_cap), p.step_time)
                  for p in simulated]
    plans = sorted((p for p, c in zip(simulated, candidates) if c.overflow is None), key=ranked)
    done = time.perf_counter()
    return Search(plans, candidates, skipped, {"enumerate": enumerated - began, "simulate": done - enumerated})


def default_cap(profile: Profile) -> float:
    """This host's memory shared by the ranks of a node (the profile's ranks_per_node)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return float(memory) / max(1, profile.conditions.ranks_per_node)
