"""``mpiexec -n P python -m executor profile [model flags] --out DIR``: measure a model once.

It runs on the real ranks with the run's model flags and writes ``DIR/costs.json``: it
builds the typed document of :mod:`simulator.costs_json` (the reader's own schema, which
checks it before it is written), which ``simulator.Profile.load`` reads to predict any
schedule and microbatch count before it runs. The profile is made of runs: every measurement of the model's ops
comes from the executor itself (:func:`~executor.engine.plan.plan`,
:func:`~executor.engine.steps.execute`: the run's threads, allocator, device, buffers,
interpreter and clock), not from a second copy of its set-up.

* **Op costs as a run sees them.** Per layout (chunks in ``--chunks``, default 1 and 2;
  m in 1, 2, 4, 8, 16, 32 that divide the batch), short real runs of the layout's
  reference schedules (:data:`REFERENCE`: 1F1B and ZB-H1 for one chunk, interleaved 1F1B
  and interleaved ZB for more), ``ROUNDS`` rounds round-robin over the layouts (a slow
  spell of the machine then hits one round of each, not every round of one), each run
  timing at least ``SAMPLES`` ops of every stage and kind. Per stage and kind the median
  of every op timed is the ``run`` time :meth:`simulator.Profile.costs` predicts from.
  In a run an op finds the caches as the other ops left them (other microbatches'
  activations, the other chunk's weights, the transfers' copies); timed alone, repeated
  on one microbatch, it finds its own. Alone times are kept beside (``alone``: the bare
  layers, the other ranks asleep, the first round's fused run, ``--inflation``'s
  yardstick), and the summary prints run over alone.
* **Memory** per op (bytes F holds, B, I, W free) from each run's metered step.
* **Host time** around ops (``dispatch``: :func:`executor.results.dispatch.host_times`) and
  each rank's optimizer step, read off the same runs' traces.
* **The canary** (:mod:`executor.record.canary`), timed before the first run and after the
  last: a run with ``--costs`` times it again and reports the machine's drift since.
* The node and the links (:mod:`executor.engine.probes`): ``share`` (beside ranks that
  wait as a run's do), ``comm_interference``, ping-pong links, with ``--dp`` the gradient
  all-reduce, and what the OS scheduler does with the node's ranks (``scheduler``: the
  cores, a busy rank's slice, its wait for a core, a waiting rank's lateness).

It prints a one-screen summary (:meth:`simulator.Profile.summary`) and its wall time.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from mpi4py import MPI

import schedules
from simulator.calibrate import OP_STATISTIC
from simulator.costs_json import (FORMAT, VERSION, Canary, Conditions, CostsDocument, Dispatch, LayoutTable, LinkPair,
                                  Links, OpMemory, OpTimes, Scheduler, StageTable)
from simulator.fit import fit_link

from ..compute.model import build_workload, check_fits
from ..config import RunConfig, UsageError
from ..record import canary
from .dispatch import host_times
from .held import op_bytes
from ..record.plain import KINDS
from ..transport.parallel import split_world
from ..engine import probes
from ..engine.plan import RunPlan, plan
from ..engine.runtime import build_runtime, node_layout
from ..engine.steps import execute

__all__ = ["profile", "PROFILE_MICROBATCHES", "REFERENCE", "reference_names", "ROUNDS", "SAMPLES"]

PROFILE_MICROBATCHES = (1, 2, 4, 8, 16, 32)
REFERENCE = {1: (("1f1b",), ("zb-h1",)),  # chunks -> (fused backward, split backward) names, first that builds
             2: (("interleaved-1f1b", "looped-bfs"), ("interleaved-zb", "zbv"))}
REFERENCE_CHUNKED = (("interleaved-1f1b", "looped-bfs"), ("interleaved-zb",))  # more chunks
ROUNDS = 3
SAMPLES = 16  # ops timed per stage, kind and run: ceil(SAMPLES / m) timed steps, at least 2


def reference_names(ranks: int, chunks: int, m: int) -> tuple[str, str]:
    """The (fused, split) reference schedules of a layout: the first of each list that builds."""
    found = []
    for names in REFERENCE.get(chunks, REFERENCE_CHUNKED):
        for name in names:
            try:
                schedules.validate(schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks))
            except (schedules.ScheduleError, ValueError):
                continue
            found.append(name)
            break
        else:
            raise UsageError(f"no reference schedule builds for ranks={ranks} chunks={chunks} microbatches={m} "
                             f"(tried {', '.join(names)}); profile other --chunks or --microbatches")
    return found[0], found[1]


def _plans(cfg: RunConfig, world: MPI.Comm, ranks: int, chunks: int, m: int) -> tuple[RunPlan, RunPlan]:
    """The layout's two reference runs, planned (so refused, if they cannot run, before any
    work). Where ranks outnumber cores a run records each op's CPU time too
    (:mod:`executor.record.cputime`): its own work, without the waits for a core that
    :mod:`simulator.slicing` models; the profile then takes those."""
    steps = max(2, math.ceil(SAMPLES / m))
    return tuple(plan(replace(cfg, schedule=name, schedule_file=None, chunks=chunks, microbatches=m, steps=steps,
                              warmup=1, comm_mode="async", predict=False, check=False, inflation=False, costs=None,
                              out=None), world.Get_size())
                 for name in reference_names(ranks, chunks, m))


class _Layout:
    """What rank 0 gathers of one layout's runs."""

    def __init__(self, fused: RunPlan, split: RunPlan):
        self.fused, self.split = fused, split
        self.traces: list[pd.DataFrame] = []  # every run's timed steps, step ids apart
        self.cpu: list[pd.DataFrame] = []  # with cpu_times: every compute op's CPU time
        self.memory: dict[tuple[int, str], float] = {}
        self.alone: dict[tuple[int, str], float] = {}

    def run(self, world: MPI.Comm, first_round: bool, repeats: int, steps_before: int) -> int:
        """Both reference runs once; returns how many timed steps they added."""
        added = 0
        for k, the_plan in enumerate((self.fused, self.split)):
            timing_alone = first_round and k == 0
            if timing_alone:
                the_plan = replace(the_plan, cfg=replace(the_plan.cfg, inflation=True))
            result = execute(the_plan, world, alone_repeats=repeats)
            if world.Get_rank() != 0:
                continue
            trace = result.trace
            self.traces.append(trace.assign(step=trace["step"] + steps_before + added))
            if result.cpu is not None:
                self.cpu.append(result.cpu)
            added += the_plan.cfg.steps
            if first_round:  # memory follows the op order alone: one metered step is the answer
                kinds = ("F", "B") if k == 0 else ("I", "W")
                found = op_bytes(the_plan.schedule.ops, result.memory)
                self.memory.update({key: b for key, b in found.items() if key[1] in kinds})
            if timing_alone:
                self.alone = {key: t for table in result.alone[:the_plan.ranks] for key, t in table.items()}
        return added

    def table(self, topology, optimizer_of: dict[int, float], allreduce: dict[int, float] | None) -> LayoutTable:
        """The layout's entry of costs.json."""
        if self.cpu:  # ranks outnumber cores: an op's own work, not its waits for a core
            ops = pd.concat(self.cpu, ignore_index=True)
            took = ops["seconds"]
        else:
            ops = pd.concat(self.traces, ignore_index=True)
            ops = ops[ops["kind"].isin(KINDS)]
            took = ops["end"] - ops["start"]
        grouped = took.groupby([ops["stage"], ops["kind"]])
        run, mean = grouped.agg(OP_STATISTIC), grouped.mean()
        p = self.fused
        act, grads = p.message_bytes()
        stages = [StageTable(**{kind: OpTimes(float(self.alone[(s, kind)]), run=float(run[(s, kind)]),
                                               run_mean=float(mean[(s, kind)])) for kind in KINDS},
                             memory=OpMemory(**{kind: float(self.memory.get((s, kind), 0.0)) for kind in KINDS}),
                             grad_bytes=grads[s])
                  for s in range(p.schedule.num_stages)]
        return LayoutTable(p.ranks, p.schedule.chunks, p.cfg.microbatches, topology.replicas, stages, act,
                           [optimizer_of[r] for r in range(p.ranks)], layers=[stop - start for start, stop in p.bounds],
                           allreduce=None if allreduce is None else [allreduce[s] for s in range(p.schedule.num_stages)])


def _optimizer(trace: pd.DataFrame) -> dict[int, float]:
    """Per pipeline rank, the median OPTIMIZER row (the step on the gradients a run leaves)."""
    steps = trace[trace["kind"] == "OPTIMIZER"]
    return (steps["end"] - steps["start"]).groupby(steps["rank"]).median().to_dict()


def plan_layouts(cfg: RunConfig, world: MPI.Comm, chunks_list=(1, 2), microbatches=None) -> dict:
    """{(chunks, m): the layout's two reference runs, planned}: every layout asked for is
    checked as a run checks it (UsageError, alike on every rank) before anything is
    measured. Without ``microbatches``: each of PROFILE_MICROBATCHES that divides the batch;
    chunks the model has too few layers for are left out, and refused if none is left."""
    ranks = world.Get_size() // cfg.dp
    check_fits(cfg, int(os.environ.get("MPI_LOCALNRANKS", world.Get_size())))
    workload = build_workload(cfg, meta=cfg.compute == "sleep")
    batch, layers = workload.inputs.shape[0], len(workload.layers)
    ms = microbatches or [m for m in PROFILE_MICROBATCHES if batch % (cfg.dp * m) == 0]
    cut = [(c, m) for c in chunks_list for m in ms if ranks * c <= layers]
    if not cut:
        raise UsageError(f"the model has {layers} layers: too few for {ranks} ranks x chunks "
                         f"{', '.join(str(c) for c in chunks_list)} (one layer at least per model stage)")
    return {(c, m): _Layout(*_plans(cfg, world, ranks, c, m)) for c, m in cut}


def profile(cfg: RunConfig, world: MPI.Comm, out: Path, layouts: dict, repeats: int = 5) -> CostsDocument | None:
    """Measure ``layouts`` (:func:`plan_layouts`) and write ``out/costs.json`` (claimed by
    the caller); return the document on world rank 0."""
    ranks = world.Get_size() // cfg.dp
    topology = split_world(world, ranks, cfg.dp)
    local_rank, local_size = node_layout(world)
    first = next(iter(layouts.values())).fused
    device = _rank_device(first, local_rank)
    before = canary.canary_in_turns(world, device)
    steps = 0
    for r in range(ROUNDS):  # round-robin: a slow spell hits one round of every layout
        for layout in layouts.values():
            steps += layout.run(world, r == 0, repeats, steps)
    runtime = build_runtime(first, topology, local_rank, local_size)  # the run's own parts, for the probes
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        rates = probes.share(runtime, first, world, local, repeats)
        acts = [max(x.fused.message_bytes()[0] or [8.0]) for x in layouts.values()]
        pipe_comm = probes.private(topology.pipe_comm)
        mine = probes.interference(runtime, first, pipe_comm, max(first.message_bytes()[0] or [0.0]), repeats)
        interference = statistics.median(world.allgather(mine))
        pairs = probes.pingpong(pipe_comm, acts, world, wire=runtime.interpreter.links.wire)
        pipe_comm.Free()
        reduce = _allreduce_tables(layouts, topology, local_rank, local_size, cfg.dp)
        os_scheduler = probes.scheduler(world, local)
    finally:
        runtime.close()
        local.Free()
    after = canary.canary_in_turns(world, device)
    if world.Get_rank() != 0:
        return None
    traces = [t for layout in layouts.values() for t in layout.traces]
    everything = pd.concat(traces, ignore_index=True)
    dispatch = Dispatch(**host_times(everything),
                        schedules=sorted({x.fused.cfg.schedule for x in layouts.values()}
                                         | {x.split.cfg.schedule for x in layouts.values()}),
                        microbatches=sorted({m for _, m in layouts})) if ranks > 1 else None
    tables = [x.table(topology, _optimizer(pd.concat(x.traces)), reduce.get(key)) for key, x in layouts.items()]
    doc = _document(cfg, world, local_size, rates, interference, pairs, tables, first.device, before, after)
    doc.scheduler, doc.dispatch = Scheduler(**os_scheduler), dispatch
    doc.save(out / "costs.json")  # checked as the reader checks it
    return doc


def _rank_device(the_plan: RunPlan, local_rank: int) -> torch.device:
    """The device this rank's runs compute on: its GPU (local rank mod the node's GPUs, as
    the runtime places it), or the CPU."""
    if the_plan.device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return the_plan.device


def _allreduce_tables(layouts: dict, topology, local_rank: int, local_size: int, dp: int) -> dict:
    """{layout key: {stage: seconds}} on pipeline rank 0 of replica 0 (empty without --dp)."""
    if dp == 1:
        return {}
    tables = {}
    for key, layout in layouts.items():
        runtime = build_runtime(layout.fused, topology, local_rank, local_size)
        try:
            mine = probes.allreduce(runtime, topology.dp_comm)
        finally:
            runtime.close()
        parts = topology.pipe_comm.gather(mine, root=0) if topology.replica == 0 else None
        if parts is not None:
            tables[key] = {s: t for part in parts for s, t in part.items()}
    return tables


def _document(cfg: RunConfig, world: MPI.Comm, local_size: int, share, interference, pairs, tables, device,
              before: list[float], after: list[float]) -> CostsDocument:
    links = []
    for pair in pairs:
        sizes, seconds = zip(*pair["samples"]) if pair["samples"] else ((8.0,), (0.0,))
        fit = fit_link(sizes, seconds, "ping-pong")
        links.append(LinkPair(pair["src"], pair["dst"], fit.latency, _finite(fit.bandwidth), list(sizes),
                              list(seconds)))
    every = [(b, s) for pair in links for b, s in zip(pair.bytes, pair.seconds)]
    overall = fit_link(*zip(*every), "ping-pong") if every else None
    model = {k: getattr(cfg, k) for k in ("model", "layers", "width", "batch", "seq_len", "heads", "dtype", "device",
                                         "compute", "t_f", "t_i", "t_w", "dp", "seed")}
    model["balance"] = list(cfg.balance) if cfg.balance else None
    conditions = Conditions(platform.node(), world.Get_size(), local_size, torch.get_num_threads(), cfg.dtype,
                            str(device), torch.__version__, MPI.Get_library_version().splitlines()[0].strip(),
                            datetime.now(timezone.utc).isoformat(timespec="seconds"), model)
    return CostsDocument(
        FORMAT, VERSION, conditions, share, float(interference),
        Links(overall.latency if overall else 0.0, None if overall is None else _finite(overall.bandwidth), links),
        tables,
        canary=Canary(canary.describe(device), [(a + b) / 2 for a, b in zip(before, after)],
                      threads=torch.get_num_threads(), before=before, after=after))


def _finite(bandwidth: float) -> float | None:
    """A fitted bandwidth as the format writes it: null for infinite (latency only)."""
    return None if math.isinf(bandwidth) else bandwidth
