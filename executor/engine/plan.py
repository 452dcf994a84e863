"""Everything decided before the first message: the schedule, the model, its stages, shapes.

:func:`plan` runs identically on every rank from the arguments and the world size alone,
so arguments that cannot work are refused everywhere before any communication (the CLI
turns :class:`UsageError` and :class:`schedules.ScheduleError` into one line and exit 2).
Activation shapes come from the model itself (one microbatch through the stages, on the
meta device under --compute sleep), so no rank has to tell another what it will send.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import schedules
import torch
from schedules import Schedule, StageCosts

from ..config import RunConfig, UsageError
from ..compute.model import Boundary, Workload, build_workload, check_fits, stage_bounds, stage_shapes
from ..transport.tags import TagPlan

__all__ = ["RunPlan", "plan", "resolve_device", "stage_shapes"]


@dataclass(frozen=True)
class RunPlan:
    """Everything one run is, decided before its first message (the planner's candidate
    layouts are :class:`planner.search.Plan`: another thing)."""

    cfg: RunConfig
    schedule: schedules.Lowered
    """Validated and lowered (with REDUCE_GRAD when dp > 1): what the interpreter runs."""
    ranks: int
    """Pipeline ranks P (world size = P x dp)."""
    workload: Workload
    bounds: list[tuple[int, int]]
    """[start, stop) layers of each model stage."""
    boundary: list[Boundary]
    """Shape and dtype of each stage's output for one microbatch."""
    device: torch.device
    tags: TagPlan
    """MPI tags of the transfers, within TAG_UB (:mod:`executor.transport.tags`)."""

    def output_bytes(self) -> list[float]:
        """Bytes of each stage's output for one microbatch (the last stage's: its loss's input),
        as much as the gradient coming back to it: the one place they are counted."""
        return [float(math.prod(shape) * dtype.itemsize) for shape, dtype in self.boundary]

    def message_bytes(self) -> tuple[list[float], list[float]]:
        """Bytes crossing each stage boundary per microbatch, and gradient bytes per stage:
        the one place both are counted (the profile, the fit and the report ask here)."""
        act = self.output_bytes()[:-1]
        grads = [float(sum(p.numel() * p.element_size() for layer in self.workload.layers[start:stop]
                           for p in layer.parameters())) for start, stop in self.bounds]
        return act, grads

    def profile_costs(self, profile=None, scale: float = 1.0):
        """The :class:`simulator.Costs` of this run's layout from ``--costs costs.json`` (None
        without it): the profile's stages cut as the run cuts them
        (:func:`simulator.profile.recut`), compute times x ``scale``."""
        if self.cfg.costs is None:
            return None
        import simulator  # only to predict

        profile = profile or simulator.Profile.load(self.cfg.costs)
        return profile.costs(self.schedule, dp=self.cfg.dp, scale=scale, layers=[b - a for a, b in self.bounds])


def _schedule(cfg: RunConfig, world: int) -> tuple[Schedule, int]:
    if cfg.schedule_file:
        schedule = schedules.load_csv(cfg.schedule_file)
        ranks = schedule.num_ranks
        if ranks * cfg.dp > world:
            raise UsageError(f"{cfg.schedule_file} names {ranks} ranks; with --dp {cfg.dp} that needs "
                             f"{ranks * cfg.dp} processes, but the world has {world}")
        if ranks * cfg.dp != world:
            raise UsageError(f"world size {world} is not pipeline ranks {ranks} x dp {cfg.dp}")
        if schedule.num_microbatches != cfg.microbatches:
            raise UsageError(f"{cfg.schedule_file} has {schedule.num_microbatches} microbatches; "
                             f"--microbatches is {cfg.microbatches}")
        return schedule, ranks
    if world % cfg.dp:
        raise UsageError(f"world size {world} is not divisible by --dp {cfg.dp}")
    ranks = world // cfg.dp
    costs = _stage_costs(cfg, ranks) if schedules.spec(cfg.schedule).costed else None
    return schedules.build(cfg.schedule, ranks=ranks, microbatches=cfg.microbatches, chunks=cfg.chunks, costs=costs,
                           memory_limit=cfg.memory_limit), ranks


def _stage_costs(cfg: RunConfig, ranks: int) -> StageCosts:
    """What zb-1p, zb-2p and zb-auto are built for on this model: with --costs the profile's
    layout (:meth:`simulator.Costs.stage_costs`: its stages' mean, the slowest hop), else
    --t-f/--t-i/--t-w and --t-comm."""
    if cfg.costs is None:
        return StageCosts(cfg.t_f, cfg.t_i, cfg.t_w, cfg.t_comm or 0.0)
    from simulator.profile import Profile, ProfileError  # only to plan from a profile

    try:
        costs = Profile.load(cfg.costs).costs(ranks=ranks, chunks=1, microbatches=cfg.microbatches, dp=cfg.dp)
    except ProfileError as err:
        raise UsageError(str(err)) from None
    return costs.stage_costs(ranks, cfg.t_comm)


def resolve_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this torch sees no CUDA device")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")  # the index (local rank mod GPU count) is set after start-up


def _tags(schedule: schedules.Lowered, tag_ub: int | None) -> TagPlan:
    if tag_ub is None:
        from mpi4py import MPI

        tag_ub = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB)
    try:
        tags = TagPlan.fit(schedule.num_stages, schedule.num_microbatches, tag_ub)
        tags.check(schedule.ops)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return tags


def plan(cfg: RunConfig, world: int, tag_ub: int | None = None) -> RunPlan:
    """Check the arguments and work out the run; raise UsageError / ScheduleError.

    Cheap checks come first: the memory a built-in model needs against what this machine
    has, the batch's rows against dp x microbatches and the model's layers against the
    stages, all before the schedule is built (10**9 microbatches of a 64-row batch are
    refused at once, not after building their schedule)."""
    for flag, rank in (("--fail-rank", cfg.fail_rank), ("--stall-rank", cfg.stall_rank)):
        if rank is not None and not 0 <= rank < world:
            raise UsageError(f"{flag} {rank} is not a rank of the world (0..{world - 1})")
    if world % cfg.dp:
        raise UsageError(f"world size {world} is not divisible by --dp {cfg.dp}")
    device = resolve_device(cfg)
    check_fits(cfg, int(os.environ.get("MPI_LOCALNRANKS", world)))  # hydra's ranks on this node
    workload = build_workload(cfg, meta=cfg.compute == "sleep")
    batch, parts = workload.inputs.shape[0], cfg.dp * cfg.microbatches
    if batch % parts:
        raise UsageError(f"the batch of {batch} rows does not divide into dp x microbatches = {parts} equal microbatches")
    if workload.targets.shape[0] != batch:
        raise UsageError(f"inputs have {batch} rows but targets {workload.targets.shape[0]}")
    if not cfg.schedule_file and world // cfg.dp * (cfg.chunks or 1) > len(workload.layers):
        raise UsageError(f"the model has {len(workload.layers)} layers, fewer than its "
                         f"{world // cfg.dp * (cfg.chunks or 1)} model stages ({world // cfg.dp} ranks x "
                         f"{cfg.chunks or 1} chunks)")
    schedule, ranks = _schedule(cfg, world)
    lowered = schedules.validate(schedule, comm_mode=cfg.comm_mode, reduce_grad=cfg.dp > 1)
    bounds = stage_bounds(workload.layers, schedule.num_stages, cfg.balance)
    boundary = stage_shapes(workload, bounds, batch // parts)
    the_plan = RunPlan(cfg, lowered, ranks, workload, bounds, boundary, device, _tags(lowered, tag_ub))
    if cfg.costs is not None:  # a missing or foreign costs.json, or one without this layout: refused now
        from simulator.profile import ProfileError

        try:
            the_plan.profile_costs()
        except ProfileError as err:
            raise UsageError(str(err)) from None
    return the_plan
