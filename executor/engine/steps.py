"""A whole run: plan, start-up, warm-up and timed steps, --check, trace gathering.

Each step begins after a barrier on the world; every rank stamps its own start, and the
step's time origin is the earliest of those stamps on the common time base
(:mod:`executor.record.timing`). Step time is from that origin to the last optimizer step of
any rank, the same span the simulator calls makespan. Every step runs under the
watchdog (:mod:`executor.engine.watchdog`). Between the warm-up and the timed steps one
untimed step runs with the memory meter on, without an optimizer step after it: the
meter's counts follow the op order alone, and its hooks would cost every timed op about
4 %. With ``--inflation`` each op is also timed
alone between the warm-up and the timed steps and again after them, and the two medians
averaged, so that a drift of the machine's speed over the run cancels to first order
(:mod:`executor.record.alone`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from mpi4py import MPI

from timeline import TRACE_COLUMNS

from schedules.ir import gc_paused

from ..compute import oracle
from ..config import RunConfig
from ..record.alone import time_ops
from ..record.canary import canary_in_turns
from ..record.timing import Copy, Row, sync_clocks
from ..transport.parallel import split_world
from .plan import RunPlan, plan
from .runtime import Runtime, build_runtime, node_layout
from .watchdog import FACTOR, FIRST_FACTOR, FIRST_FLOOR_S, FIRST_STEPS_S, FLOOR_S, Watchdog

__all__ = ["run", "RunResult", "execute", "STAGING_COLUMNS"]

STAGING_COLUMNS = ["rank", "step", "stage", "mb", "kind", "bytes", "start", "end"]


@dataclass(frozen=True)
class RunResult:
    plan: RunPlan
    ok: bool
    """False when --check found a mismatch."""
    message: str
    """The --check verdict (one line), empty without --check."""
    loss: float
    """Mean loss over all microbatches of the last step."""
    clock_error: float
    """Bound on the clock alignment error across ranks (s)."""
    trace: pd.DataFrame | None = None
    """World rank 0 only: replica 0's timed steps, the trace schema plus a ``step`` column."""
    memory: pd.DataFrame | None = None
    """World rank 0 only: replica 0's activation bytes held (:mod:`executor.compute.memory`)
    in the metered step (untimed, after the warm-up), columns step (0), rank, op (-1 at
    the step's start, -2 inside an overlapped pair, else the index in the rank's list
    after which it was taken), time (s from the rank's start of that step) and bytes."""
    cuda_peak: list | None = None
    """World rank 0, on CUDA: per pipeline rank, torch.cuda.max_memory_allocated (bytes),
    the highest over the timed steps (the peak is reset at each step's start)."""
    device: list | None = None
    """World rank 0, on CUDA: per pipeline rank, {"memory": [(bytes allocated at the step's
    start, peak bytes during it) per timed step], "mapping_error": [the event-to-host
    clock bound (s) per timed step]} (:class:`executor.record.timing.Recorder`)."""
    staging: pd.DataFrame | None = None
    """World rank 0, when transfers were staged: every copy of replica 0's timed steps,
    columns :data:`STAGING_COLUMNS` (kind D2H before a SEND, H2D after a RECV; times from
    the step's origin, like the trace's)."""
    alone: list | None = None
    """World rank 0, with --inflation: per world rank, {(stage, kind): median s} timed alone
    (the mean of the medians before and after the timed steps)."""
    watchdog_s: float = FIRST_STEPS_S
    """The watchdog's limit per timed step (s)."""
    canary: list | None = None
    """With --costs: every world rank's canary (s), timed just before the timed steps."""
    cpu: pd.DataFrame | None = None
    """World rank 0, with --cpu-times or where ranks outnumber cores: replica 0's compute
    ops' thread CPU time (:mod:`executor.record.cputime`), columns rank, step, stage, mb,
    kind, seconds."""


def run(cfg: RunConfig, world: MPI.Comm | None = None) -> RunResult:
    """Run ``cfg`` on ``world`` (default COMM_WORLD); arguments are checked before any message."""
    world = world or MPI.COMM_WORLD
    the_plan = plan(cfg, world.Get_size())  # raises UsageError / ScheduleError on every rank alike
    return execute(the_plan, world)


def execute(the_plan: RunPlan, world: MPI.Comm, *, alone_repeats: int = 20) -> RunResult:
    """Run a plan (every rank); ``alone_repeats``: rounds per op of ``--inflation``'s timing alone."""
    cfg = the_plan.cfg
    topology = split_world(world, the_plan.ranks, cfg.dp)
    local_rank, local_size = node_layout(world)
    want = oracle.reference(the_plan.workload, cfg.dp * cfg.microbatches) if cfg.check else None
    runtime = build_runtime(the_plan, topology, local_rank, local_size)
    runtime.metering(False)  # timed steps run bare; memory has a step of its own
    clock = sync_clocks(world)
    verdict, loss, alone, samples, canary_now = "", float("nan"), None, [], None
    watchdog = Watchdog(runtime.interpreter, world.Get_rank(), cfg.timeout or FIRST_STEPS_S)
    if cfg.timeout is None:
        watchdog.limit = _first_limit(runtime, the_plan, world)
    try:
        for step in range(cfg.warmup + cfg.steps):
            if step == cfg.warmup:
                if cfg.warmup and cfg.timeout is None:
                    watchdog.limit = _limit_after_warmup(runtime, world)
                if not cfg.check:
                    samples = _metered_step(runtime, world, cfg, watchdog, step)
                if cfg.inflation:
                    alone = time_ops(runtime, the_plan, world, alone_repeats)
                if cfg.costs is not None:  # the machine's speed now, against the profile's
                    canary_now = canary_in_turns(world, runtime.device)
                runtime.recorder.clear()  # on a GPU the recorder resets the memory peak every step
            watchdog.arm(step)
            local = _step(runtime, world, cfg)
            watchdog.disarm()
            if want is not None and step == 0:  # the gradients of one step, before the optimizer
                verdict = _check(runtime, world, want, _mean_loss(world, local, cfg), the_plan)
                if verdict.startswith("check FAILED"):
                    break
            _optimize(runtime)
            loss = _mean_loss(world, local, cfg)  # after the optimizer: no sync inside the timed step
        if cfg.inflation:  # again after the timed steps: before and after bracket the run
            alone = _average(alone, time_ops(runtime, the_plan, world, alone_repeats))
    finally:
        watchdog.close()
        runtime.close()
    ok = not verdict.startswith("check FAILED")
    mine = dict(plan=the_plan, ok=ok, message=verdict, loss=loss, clock_error=clock.error, alone=alone,
                watchdog_s=watchdog.limit, canary=canary_now)
    if topology.replica != 0:
        return RunResult(**mine)
    found = _gather(runtime, topology.pipe_comm, clock.offset, samples, _device_record(runtime.recorder))
    return RunResult(**mine, **(found or {}))


def _device_record(recorder) -> dict | None:
    """On a GPU, this rank's per-step (baseline, peak) bytes and clock-mapping bounds."""
    if recorder.memory is None:
        return None
    return {"memory": list(recorder.memory_steps), "mapping_error": list(recorder.mapping_errors)}


def _metered_step(runtime: Runtime, world: MPI.Comm, cfg: RunConfig, watchdog: Watchdog, step: int) -> list:
    """One untimed step with the memory meter on, and no optimizer step after it (the
    weights stay as they were); its samples (s from the rank's start of that step, bytes,
    op index)."""
    runtime.metering(True)
    watchdog.arm(step)
    _step(runtime, world, cfg)
    watchdog.disarm()
    runtime.metering(False)
    began = runtime.recorder.step_starts[-1]
    return [(t - began, b, op) for t, b, op in runtime.memory.samples]


def _average(before: list | None, after: list | None) -> list | None:
    """Per world rank, the mean of two {(stage, kind): seconds} tables (rank 0 has them)."""
    if before is None or after is None:
        return before
    return [{key: (b[key] + a[key]) / 2 for key in b} for b, a in zip(before, after)]


def _first_limit(runtime: Runtime, the_plan: RunPlan, world: MPI.Comm) -> float:
    """FIRST_FACTOR x the step predicted before any step ran, at least FIRST_FLOOR_S (the
    same on every rank): from the profile with --costs; else from the sleeps, or from one
    F and one B of every stage timed now (bare, every rank at once, a scratch microbatch)."""
    import simulator

    from ..record.alone import stage_inputs
    from ..record.plain import bare, perf_call

    costs = the_plan.profile_costs()
    if costs is None:
        cfg, stages = the_plan.cfg, the_plan.schedule.num_stages
        if cfg.compute == "sleep":
            mine = {s: (cfg.t_f, cfg.t_i + cfg.t_w) for s in runtime.stages}
        else:
            data, mine = runtime.interpreter.data, {}
            for s, stage in runtime.stages.items():
                x, target, grad = stage_inputs(the_plan.boundary, s, stages, runtime.device, data.inputs[0],
                                               data.targets[0])
                plain = bare(stage)
                mine[s] = (perf_call(plain.forward, -1, x, target), perf_call(plain.backward, -1, grad))
                plain.losses.clear()
                for p in plain.parameters():
                    p.grad = None
        timed = {s: t for part in world.allgather(mine) for s, t in part.items()}  # floats made here
        forward, backward = ([timed[s][k] for s in range(stages)] for k in (0, 1))
        costs = simulator.Costs(t_f=forward, t_i=[b / 2 for b in backward], t_w=[b / 2 for b in backward],
                                dp=cfg.dp)
    return max(FIRST_FLOOR_S, FIRST_FACTOR * simulator.simulate(the_plan.schedule, costs).makespan)


def _limit_after_warmup(runtime: Runtime, world: MPI.Comm) -> float:
    """FACTOR x the warm-up's last step as it ran (from its start to the last optimizer
    step of any rank), at least FLOOR_S; the same on every rank. The first warm-up step
    allocates and warms caches; the last one is what the timed steps will take."""
    rec = runtime.recorder
    mine = max((row.end for row in rec.rows if row.step == len(rec.step_starts) - 1), default=rec.step_starts[-1])
    took = world.allreduce(mine - rec.step_starts[-1], op=MPI.MAX)
    return max(FACTOR * took, FLOOR_S)


def _step(runtime: Runtime, world: MPI.Comm, cfg: RunConfig) -> float:
    """One step of the schedule; returns this rank's share of the mean loss."""
    for p in runtime.parameters():
        p.grad = None
    for stage in runtime.stages.values():
        stage.losses.clear()
    _barrier(world, runtime.progress)
    with gc_paused():  # the cyclic collector would pause the rank mid-step; refcounts free everything
        runtime.recorder.begin_step()
        runtime.interpreter.run_step()
        runtime.recorder.end_step()
    return sum(float(loss) for s in runtime.stages.values() for loss in s.losses) / cfg.microbatches


def _barrier(world: MPI.Comm, progress) -> None:
    """A barrier that waits as the run's waits do (on an oversubscribed node MPICH's Barrier
    polls, taking the core a late rank needs), and in Python: a rank blocked inside MPI's
    Barrier cannot take Ctrl-C, and the job then ended without rank 0's line."""
    progress.wait(progress.add(world.Ibarrier()))


def _mean_loss(world: MPI.Comm, local: float, cfg: RunConfig) -> float:
    """Mean loss over all microbatches: one last stage per replica holds losses."""
    total = np.array([local])
    world.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    return float(total[0]) / cfg.dp


def _optimize(runtime: Runtime) -> None:
    start = time.perf_counter()
    if runtime.optimizer is not None:
        runtime.optimizer.step()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
    runtime.recorder.add_row("OPTIMIZER", -1, -1, start, time.perf_counter())


def _check(runtime: Runtime, world: MPI.Comm, want: tuple, loss: float, the_plan: RunPlan) -> str:
    """Every rank compares its own stages; rank 0 names the first mismatch in model order."""
    want_loss, want_grads = want
    order = {name: i for i, name in enumerate(want_grads)}
    found: list[tuple[int, str]] = []
    for s, stage in runtime.stages.items():
        start, _ = the_plan.bounds[s]
        for name, p in oracle.param_names(stage.layers, start):
            problem = oracle.compare(name, p.grad, want_grads[name])
            if problem:
                found.append((order[name], problem))
    bad_loss = oracle.compare_loss(loss, want_loss, next(iter(want_grads.values())).dtype) if want_grads else None
    everything = world.gather(min(found) if found else None, root=0)  # small tuples of our own making
    verdict = ""
    if world.Get_rank() == 0:
        worst = min((f for f in everything if f is not None), default=None)
        if bad_loss or worst:
            verdict = f"check FAILED: {bad_loss or worst[1]}"
        else:
            verdict = f"check passed: loss {loss:.10g} and {len(want_grads)} parameter gradients match the single-process run"
    return world.bcast(verdict, root=0)


def _gather(runtime: Runtime, pipe_comm: MPI.Comm, offset: float, samples: list | None = None,
            device: dict | None = None) -> dict | None:
    """Replica 0's records on its pipeline rank 0, as :class:`RunResult` fields (None on
    the others): the trace (times from each step's origin, the earliest start of any rank,
    on rank 0's clock), the metered step's memory samples (their own step's times), the
    staging copies (timed as the rows), the ops' CPU times, the ranks' device records."""
    rec, rank = runtime.recorder, pipe_comm.Get_rank()

    def shifted(records: list) -> list:  # onto rank 0's clock
        return [r._replace(start=r.start + offset, end=r.end + offset) for r in records]

    part = (rank, shifted(rec.rows), [(0, rank, op, t, b) for t, b, op in samples or []],
            [t + offset for t in rec.step_starts], device, shifted(rec.copies), getattr(rec, "cpu", None))
    gathered = pipe_comm.gather(part, root=0)  # small named tuples and floats of our own making
    if gathered is None:
        return None
    origins = np.min([g[3] for g in gathered], axis=0)  # per step: the earliest start over ranks

    def frame(index: int, fields: tuple[str, ...]) -> pd.DataFrame:
        """Every rank's records ``index``, times from their step's origin."""
        table = pd.DataFrame([(g[0], *r) for g in gathered for r in g[index]], columns=["rank", *fields])
        if len(table):
            origin = origins[table["step"].to_numpy()]
            table["start"] -= origin
            table["end"] -= origin
        return table

    trace, copies = frame(1, Row._fields), frame(5, Copy._fields)
    found = {"trace": trace[TRACE_COLUMNS + ["step"]].sort_values(["step", "rank", "start"], kind="stable")
             .reset_index(drop=True),
             "memory": pd.DataFrame([m for g in gathered for m in g[2]], columns=["step", "rank", "op", "time", "bytes"]),
             "staging": copies[STAGING_COLUMNS] if len(copies) else None}
    if gathered[0][6] is not None:  # where ranks outnumber cores: each compute op's own work
        found["cpu"] = pd.DataFrame([(g[0], *row) for g in gathered for row in g[6]],
                                    columns=["rank", "step", "stage", "mb", "kind", "seconds"])
    devices = [g[4] for g in gathered]
    if devices[0] is not None:
        found["device"] = devices
        found["cuda_peak"] = [max((peak for _, peak in d["memory"]), default=0) for d in devices]
    return found


