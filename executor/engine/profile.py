"""``mpiexec -n P python -m executor profile [model flags] --out DIR``: measure a model once.

It runs on the real ranks with the run's model flags and writes ``DIR/costs.json`` in the
format of :mod:`simulator.profile` (JSON only), which ``simulator.Profile.load`` reads to
predict any schedule and microbatch count before it runs. Measured, in this order:

* per layout (chunks in ``--profile-chunks``, default 1 and 2; m in 1, 2, 4, 8, 16, 32
  that divide the batch), per model stage: F, B (fused backward, timed on its own), I
  and W, at least ``--repeats`` samples each, taken in ``ROUNDS`` rounds over all layouts
  in turn and the median over rounds kept (this machine has slow spells: two profiles
  taken in one go minutes apart gave one op 1.97 and 1.32 ms), by
  :func:`executor.record.alone.time_stage`, first alone (the ranks take turns, the others
  asleep) then with every rank computing at once; the bytes each op holds or frees (the
  memory meter); the bytes crossing each stage boundary; the optimizer step of each
  pipeline rank. Stage s is timed on pipeline rank s mod P, the looping placement.
* per layout and stage, F, B, I and W also timed *in sequence*: each rank (in turn, the
  others asleep) runs its compute ops of a whole step in the order of a reference
  schedule of the layout (1F1B and ZB-H1 for one chunk, interleaved 1F1B and interleaved
  ZB for more), every microbatch's activations held as in a run. A run's op finds caches
  holding other microbatches' activations and the other chunk's weights; an op repeated
  on one microbatch finds its own (the summary's seq/alone column: up to 1.10 here with
  two chunks). :meth:`simulator.Profile.costs` predicts from these.
* ``share``: the per-rank rate while k = 1 .. (ranks on the node) ranks compute at once,
  by throughput: F + B of the first layout's first stage for about SHARE_SPAN_S, alone
  over k at a time, normalised so that k = 1 is 1.
* ``comm_interference``: pairs of ranks exchange one boundary-sized message per op while
  they compute (moved by the same progress pokes as a run); compute with the transfer in
  flight over compute without, minus 1, median over ranks (never below 0).
* links: ping-pong between pipeline neighbours over 8 bytes and sizes from a quarter of
  the smallest layout's activation to twice the largest's (:func:`ping_sizes`),
  least-squares latency + size / bandwidth per pair and over all pairs. (Sizes only far
  above the activations, as before, fitted a latency of 0.3 ms where 8 bytes take 5 us.)
* with ``--dp`` > 1, the gradient all-reduce of each stage in its data-parallel group.
* ``dispatch``: the host time around ops (``Costs.dispatch_*``), read off short real runs
  of 1F1B and ZB-H1 (3 timed steps each) by :func:`executor.record.dispatch.host_times`.

It prints a one-screen summary (:meth:`simulator.Profile.summary`) and its wall time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import schedules
import torch
from mpi4py import MPI
from schedules import Op, OpKind

from ..compute.memory import MemoryMeter
from ..compute.model import build_workload, stage_bounds
from ..compute.stage import SleepStage, Stage
from ..config import RunConfig, UsageError
from ..record.alone import KINDS, idle_barrier, stage_inputs, time_stage
from ..record.timing import Recorder
from ..transport.parallel import split_world
from ..transport.progress import make_progress
from .plan import resolve_device, stage_shapes
from .runtime import keep_freed_memory, node_layout

__all__ = ["profile", "PROFILE_MICROBATCHES"]

PROFILE_MICROBATCHES = (1, 2, 4, 8, 16, 32)


class _Layout:
    """The stages pipeline rank ``rank`` holds in one layout, ready to time."""

    def __init__(self, cfg: RunConfig, workload, ranks: int, rank: int, chunks: int, m: int, device, poke=None):
        self.ranks, self.chunks, self.m = ranks, chunks, m
        self.stages = ranks * chunks
        bounds = stage_bounds(workload.layers, self.stages, cfg.balance if chunks == 1 else None)
        rows = workload.inputs.shape[0] // (cfg.dp * m)
        self.boundary = stage_shapes(workload, bounds, rows)
        self.mine = [s for s in range(self.stages) if s % ranks == rank]
        x0, y0 = workload.inputs[:rows].to(device), workload.targets[:rows].to(device)
        self.inputs = {s: stage_inputs(self.boundary, s, self.stages, device, x0, y0) for s in self.mine}
        layers = {s: [layer.to(device) for layer in workload.layers[slice(*bounds[s])]] for s in self.mine}
        params = [p for group in layers.values() for layer in group for p in layer.parameters()]
        self.memory = MemoryMeter(params + [workload.inputs, workload.targets])
        last = self.stages - 1
        if cfg.compute == "sleep":
            self.ops = {s: SleepStage(s, cfg.t_f, cfg.t_i, cfg.t_w, *self._buffers(s, device), poke=poke)
                        for s in self.mine}
        else:
            self.ops = {s: Stage(s, layers[s], workload.loss_fn if s == last else None, m, poke=poke,
                                 memory=self.memory) for s in self.mine}
        self.params = params

    def _buffers(self, s: int, device):
        like = lambda b: torch.zeros(self.boundary[b][0], dtype=self.boundary[b][1], device=device)  # noqa: E731
        return (like(s) if s < self.stages - 1 else None), (like(s - 1) if s > 0 else None)

    def boundary_bytes(self) -> list[float]:
        return [float(math.prod(shape) * dtype.itemsize) for shape, dtype in self.boundary[:-1]]

    def time(self, measure, repeats: int) -> dict[int, dict]:
        return {s: time_stage(self.ops[s], measure, self.inputs[s], repeats, self.memory) for s in self.mine}

    def in_sequence(self, measure, rank: int, repeats: int) -> dict[int, dict[str, float]]:
        """Median seconds per stage and kind of this rank's compute ops run in the order of
        the layout's reference schedules (:func:`reference_orders`), passes over the whole
        step until every op has ``repeats`` samples (after one untimed pass)."""
        orders = reference_orders(self.ranks, self.chunks, self.m, rank)
        times: dict[int, dict[str, list[float]]] = {s: {kind: [] for kind in KINDS} for s in self.mine}
        for turn in range(1 + math.ceil(repeats / self.m)):
            for order in orders:
                for op in order:
                    stage, (x, target, grad) = self.ops[op.stage], self.inputs[op.stage]
                    kind = op.kind.value
                    if kind == "F":
                        took = measure(stage.forward, op.mb, x, target)
                    elif kind == "W":
                        took = measure(stage.backward_weight, op.mb)
                    else:
                        took = measure(stage.backward if kind == "B" else stage.backward_input, op.mb, grad)
                    if turn:
                        times[op.stage][kind].append(took)
            for stage in self.ops.values():
                stage.losses.clear()
        return {s: {kind: statistics.median(t) for kind, t in by.items() if t} for s, by in times.items()}


REFERENCE = {1: ("1f1b", "zb-h1")}  # chunks -> (fused, split backward); more chunks: the interleaved ones
REFERENCE_CHUNKED = ("interleaved-1f1b", "interleaved-zb")


def reference_orders(ranks: int, chunks: int, m: int, rank: int) -> list[list[Op]]:
    """``rank``'s compute ops (F, B; then F, I, W) in the orders of the layout's reference
    schedules, or, where a builder refuses the layout, all forwards then all backwards."""
    orders = []
    for name, split in zip(REFERENCE.get(chunks, REFERENCE_CHUNKED), (False, True)):
        try:
            ops = schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks).ops[rank]
            orders.append([op for op in ops if op.kind.is_compute])
        except schedules.ScheduleError:
            mine = [s for s in range(ranks * chunks) if s % ranks == rank]
            forward = [Op(OpKind.F, s, mb) for mb in range(m) for s in mine]
            back = [Op(kind, op.stage, op.mb) for op in reversed(forward)
                    for kind in ((OpKind.I, OpKind.W) if split else (OpKind.B,))]
            orders.append(forward + back)
    return orders


ROUNDS = 5  # the measurements of every layout are taken in this many rounds, round-robin


def _median_of(values: list):
    """The element-wise median of equally shaped numbers, or dicts of them (nested)."""
    if isinstance(values[0], dict):
        return {key: _median_of([v[key] for v in values]) for key in values[0]}
    return statistics.median(values)


def _turns(world: MPI.Comm, work, together: bool):
    """Run ``work()`` on each rank in turn (the others asleep), or on all at once."""
    result = None
    for turn in range(1 if together else world.Get_size()):
        if together or turn == world.Get_rank():
            result = work()
        idle_barrier(world)
    return result


def _optimizer(layout: _Layout, lr: float, repeats: int) -> float:
    if not layout.params:
        return 0.0
    for p in layout.params:
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.SGD(layout.params, lr=lr)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    for p in layout.params:
        p.grad = None
    return statistics.median(times)


def ping_sizes(acts: list[float]) -> list[int]:
    """Message sizes for the link fit: 8 bytes (pins the latency), then from a quarter of
    the smallest activation of the layouts to twice the largest, 2x apart (at least 5)."""
    low, high = max(8.0, min(acts) / 4), max(16.0, 2 * max(acts))
    steps = max(4, math.ceil(math.log2(high / low)))
    return sorted({8, *(int(low * (high / low) ** (k / steps)) for k in range(steps + 1))})


def _pingpong(pipe: MPI.Comm, acts: list[float], world: MPI.Comm, rounds: int = 20) -> list[dict]:
    """One-way times between pipeline neighbours r, r + 1 (each pair in turn)."""
    rank, size = pipe.Get_rank(), pipe.Get_size()
    sizes = ping_sizes(acts)
    pairs = []
    for left in range(size - 1):
        samples: list[tuple[float, float]] = []
        if rank in (left, left + 1):
            peer = left + 1 if rank == left else left
            for n in sizes:
                buf = np.zeros(n, dtype=np.uint8)
                for k in range(rounds + 3):
                    start = time.perf_counter()
                    if rank == left:
                        pipe.Send(buf, dest=peer, tag=77), pipe.Recv(buf, source=peer, tag=78)
                    else:
                        pipe.Recv(buf, source=peer, tag=77), pipe.Send(buf, dest=peer, tag=78)
                    if k >= 3:
                        samples.append((float(n), (time.perf_counter() - start) / 2))
        idle_barrier(world)
        pairs.append({"src": left, "dst": left + 1, "samples": pipe.bcast(samples, root=left)})
    return pairs


def _interference(layout: _Layout, pipe: MPI.Comm, measure, progress, repeats: int) -> float:
    """Compute with an own transfer in flight over compute without, minus 1 (this rank)."""
    rank = pipe.Get_rank()
    peer = rank ^ 1
    if peer >= pipe.Get_size() or not layout.boundary_bytes():
        return 0.0
    s = layout.mine[0]
    stage, inputs = layout.ops[s], layout.inputs[s]
    n = int(max(layout.boundary_bytes()))
    out, into = np.ones(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8)
    plain, busy = [], []
    for _ in range(repeats):
        plain.append(measure(stage.forward, -2, inputs[0], inputs[1]) + measure(stage.backward, -2, inputs[2]))
        pipe.Barrier()
        pending = [progress.add(pipe.Irecv(into, source=peer, tag=79)), progress.add(pipe.Isend(out, dest=peer, tag=79))]
        busy.append(measure(stage.forward, -2, inputs[0], inputs[1]) + measure(stage.backward, -2, inputs[2]))
        progress.wait_all(pending)
    stage.losses.clear()
    return max(0.0, statistics.median(busy) / statistics.median(plain) - 1.0)


SHARE_SPAN_S = 0.25  # each rank computes this long per k: many of the OS scheduler's time slices


def _share(layout: _Layout, world: MPI.Comm, local: MPI.Comm, measure, repeats: int) -> list[float]:
    """Per-rank rate with k = 1 .. node ranks computing at once: F + B of the first stage
    over about SHARE_SPAN_S, by throughput (the whole block's time per round). A median
    of single ops would miss the sharing: with more ranks than cores the OS gives each a
    slice of milliseconds, and an op that fits in one runs at full speed."""
    s = layout.mine[0]
    stage, x, target, grad = layout.ops[s], *layout.inputs[s]

    def rounds_of(n: int) -> None:
        for _ in range(n):
            stage.forward(-3, x, target)
            stage.backward(-3, grad)

    one = _turns(world, lambda: statistics.median(measure(rounds_of, 1) for _ in range(repeats)), together=False)
    n = max(repeats, math.ceil(SHARE_SPAN_S / max(world.allgather(one))))

    alone = _turns(world, lambda: measure(rounds_of, n) / n, together=False)
    rates = []
    for k in range(1, local.Get_size() + 1):
        mine = measure(rounds_of, n) / n if local.Get_rank() < k else None
        idle_barrier(world)
        rates.append(alone / mine if mine else None)
    stage.losses.clear()
    per_k = world.allgather(rates)  # small lists of floats
    share = [statistics.median([r[k] for r in per_k if r[k] is not None]) for k in range(local.Get_size())]
    return [rate / share[0] for rate in share]  # k = 1 is alone by definition: 1.0, not 1.0 +- noise


def profile(cfg: RunConfig, world: MPI.Comm, out: Path, chunks_list=(1, 2), microbatches=None,
            repeats: int = 5) -> dict | None:
    """Measure and write ``out/costs.json``; return the document on world rank 0."""
    began = time.perf_counter()
    ranks = world.Get_size() // cfg.dp
    if world.Get_size() % cfg.dp:
        raise UsageError(f"world size {world.Get_size()} is not divisible by --dp {cfg.dp}")
    topology = split_world(world, ranks, cfg.dp)
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) // local_size))
    keep_freed_memory()
    device = resolve_device(cfg)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    workload = build_workload(cfg, meta=False)
    batch = workload.inputs.shape[0]
    ms = microbatches or [m for m in PROFILE_MICROBATCHES if batch % (cfg.dp * m) == 0]
    progress = make_progress("hooks", spin=local_size <= len(os.sched_getaffinity(0)))
    measure = Recorder(cuda=device.type == "cuda" and cfg.compute == "real").time_call
    built = [_Layout(cfg, workload, ranks, topology.rank, chunks, m, device, poke=progress.poke)
             for chunks in chunks_list if ranks * chunks <= len(workload.layers)  # else it cannot be cut
             for m in ms]
    first = built[0]
    per_round = math.ceil(repeats / ROUNDS)
    rounds: list[list[tuple]] = [[] for _ in built]
    for _ in range(ROUNDS):  # round-robin: a slow spell of the machine hits every layout alike
        for layout, done in zip(built, rounds):
            done.append((_turns(world, lambda: layout.time(measure, per_round), together=False),
                         _turns(world, lambda: layout.time(measure, per_round), together=True),
                         _turns(world, lambda: layout.in_sequence(measure, topology.rank, per_round), together=False),
                         _optimizer(layout, cfg.lr, per_round)))
    layouts = [(layout, *(_median_of([r[k] for r in done]) for k in range(4)), _allreduce(layout, topology, cfg.dp))
               for layout, done in zip(built, rounds)]
    share = _share(first, world, local, measure, repeats)
    interference = _interference(first, topology.pipe, measure, progress, repeats)
    interference = statistics.median(world.allgather(interference))
    pairs = _pingpong(topology.pipe, [max(row[0].boundary_bytes() or [8.0]) for row in layouts], world)
    dispatch = _dispatch(cfg, world, batch) if ranks > 1 else None
    tables = [_table(topology, *row) for row in layouts]
    local.Free()
    if world.Get_rank() != 0:
        return None
    doc = _document(cfg, world, local_size, share, interference, pairs, tables, device)
    if dispatch is not None:
        doc["dispatch"] = dispatch
    out.mkdir(parents=True, exist_ok=True)
    (out / "costs.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    doc["wall_s"] = time.perf_counter() - began
    return doc


DISPATCH_SCHEDULES = ("1f1b", "zb-h1")  # between them every kind of gap between compute ops


def _dispatch(cfg: RunConfig, world: MPI.Comm, batch: int) -> dict | None:
    """Host time around ops from short runs of DISPATCH_SCHEDULES (world rank 0 gets it)."""
    import pandas as pd

    from ..record.dispatch import host_times
    from .plan import plan
    from .steps import execute

    m = next(m for m in (cfg.microbatches, 8, 4, 2, 1) if batch % (cfg.dp * m) == 0)
    traces = []
    for name in DISPATCH_SCHEDULES:
        run = replace(cfg, schedule=name, schedule_file=None, chunks=None, microbatches=m, steps=3, warmup=2,
                      comm="async", predict=False, check=False, inflation=False, costs=None, out=None)
        result = execute(plan(run, world.Get_size()), world)
        if result.trace is not None:
            traces.append(result.trace.assign(step=result.trace["step"] + run.steps * len(traces)))  # step ids apart
    if world.Get_rank() != 0:
        return None
    return {**host_times(pd.concat(traces, ignore_index=True)), "schedules": list(DISPATCH_SCHEDULES),
            "microbatches": m}


def _allreduce(layout: _Layout, topology, dp: int, rounds: int = 10) -> dict[int, float] | None:
    if dp == 1:
        return None
    times = {}
    for s in layout.mine:
        n = sum(p.numel() for layer in layout.ops[s].layers for p in layer.parameters()) if hasattr(
            layout.ops[s], "layers") else 1
        flat = np.zeros(max(1, n), dtype=np.float32)
        samples = []
        for _ in range(rounds):
            topology.dp.Barrier()
            start = time.perf_counter()
            topology.dp.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            samples.append(time.perf_counter() - start)
        times[s] = statistics.median(samples)
    return times


def _table(topology, layout: _Layout, alone, together, sequence, optimizer: float, reduce) -> dict | None:
    """One layout's row, gathered from replica 0's pipeline ranks onto pipeline rank 0."""
    mine = {"alone": alone, "together": together, "sequence": sequence, "optimizer": optimizer, "reduce": reduce,
            "grad": {s: float(sum(p.numel() * p.element_size() for layer in getattr(layout.ops[s], "layers", [])
                                  for p in layer.parameters())) for s in layout.mine}}
    parts = topology.pipe.gather(mine, root=0) if topology.replica == 0 else None
    if parts is None:
        return None
    stages = []
    for s in range(layout.stages):
        part = parts[s % layout.ranks]
        row = {kind: {"alone": part["alone"][s][kind], "concurrent": part["together"][s][kind]} for kind in KINDS}
        for kind, seconds in part["sequence"][s].items():
            row[kind]["sequence"] = seconds
        held = part["alone"][s]["memory"]
        row["memory"] = held
        row["grad_bytes"] = part["grad"][s]
        stages.append(row)
    table = {"ranks": layout.ranks, "chunks": layout.chunks, "microbatches": layout.m, "dp": topology.replicas,
             "stages": stages, "boundary_bytes": layout.boundary_bytes(),
             "optimizer": [p["optimizer"] for p in parts]}
    if topology.replicas > 1:
        table["allreduce"] = [parts[s % layout.ranks]["reduce"][s] for s in range(layout.stages)]
    return table


def _document(cfg: RunConfig, world: MPI.Comm, local_size: int, share, interference, pairs, tables, device) -> dict:
    from simulator.fit import fit_link

    links = []
    for pair in pairs:
        sizes, seconds = zip(*pair["samples"]) if pair["samples"] else ((8.0,), (0.0,))
        fit = fit_link(sizes, seconds, "ping-pong")
        links.append({"src": pair["src"], "dst": pair["dst"], "latency": fit.latency,
                      "bandwidth": None if math.isinf(fit.bandwidth) else fit.bandwidth,
                      "bytes": list(sizes), "seconds": list(seconds)})
    every = [(b, s) for pair in links for b, s in zip(pair["bytes"], pair["seconds"])]
    overall = fit_link(*zip(*every), "ping-pong") if every else None
    model = {k: getattr(cfg, k) for k in ("model", "layers", "width", "batch", "seq_len", "heads", "dtype", "device",
                                         "compute", "t_f", "t_i", "t_w", "dp", "seed")}
    return {
        "format": "pipebubble-costs", "version": 1,
        "conditions": {"host": platform.node(), "ranks": world.Get_size(), "ranks_per_node": local_size,
                       "threads": torch.get_num_threads(), "dtype": cfg.dtype, "device": str(device),
                       "torch": torch.__version__, "mpi": MPI.Get_library_version().splitlines()[0].strip(),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": model},
        "share": share, "comm_interference": float(interference),
        "links": {"latency": overall.latency if overall else 0.0,
                  "bandwidth": None if overall is None or math.isinf(overall.bandwidth) else overall.bandwidth,
                  "pairs": links},
        "layouts": [t for t in tables if t is not None],
    }
