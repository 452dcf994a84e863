"""One rank's working parts, made from a :class:`~executor.engine.plan.RunPlan` after start-up.

The device is the local rank modulo the node's GPU count; torch threads default to the
node's cores divided by the ranks on it, so that oversubscribed CPU runs do not fight.
A waiting rank spins (yielding) only while the node has a core for each of its ranks.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

import torch
from mpi4py import MPI

from ..compute.memory import MemoryMeter
from ..compute.stage import SleepStage, Stage
from ..record.cputime import CpuRecorder
from ..record.timing import DeviceMemory, Recorder
from ..transport.p2p import make_links
from ..transport.parallel import GradReducer, Topology
from ..transport.progress import Progress, check_thread_level, make_progress
from ..transport.wire import Wire
from .faults import inject
from .interpreter import Interpreter, Microbatches
from .plan import RunPlan

__all__ = ["Runtime", "build_runtime", "node_layout"]


@dataclass
class Runtime:
    device: torch.device
    stages: dict
    interpreter: Interpreter
    recorder: Recorder
    progress: Progress
    memory: MemoryMeter
    optimizer: torch.optim.Optimizer | None

    def parameters(self) -> list[torch.Tensor]:
        return [p for stage in self.stages.values() for p in stage.parameters()]

    def metering(self, on: bool) -> None:
        """Measure activation memory (saved-tensor hooks, delivered buffers, a sample per
        op) or run bare. The executor meters one untimed step: the counts follow the op
        order alone, and the hooks cost the ops they sit in about 4 %."""
        self.memory.on = on
        for stage in self.stages.values():
            stage.metering(on)

    def close(self) -> None:
        self.progress.close()


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks up to 32 MiB for reuse instead of handing them back to the
    kernel: a fresh receive buffer then costs no page faults (4,096 of them per 16 MiB,
    paid inside whatever op the copy lands in), as torch's caching allocators do on GPUs."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: the largest glibc allows
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never trim the heap
    except (OSError, AttributeError):
        pass


def node_layout(world: MPI.Comm) -> tuple[int, int]:
    """(local rank, ranks on this node); collective over ``world``."""
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    layout = local.Get_rank(), local.Get_size()
    local.Free()
    return layout


def _device(plan: RunPlan, local_rank: int) -> torch.device:
    if plan.device.type != "cuda":
        return plan.device
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def _layers(plan: RunPlan, s: int, device: torch.device) -> list:
    start, stop = plan.bounds[s]
    return [layer.to(device) for layer in plan.workload.layers[start:stop]]


def _stage(plan: RunPlan, s: int, device: torch.device, progress: Progress, memory: MemoryMeter, layers: list | None):
    """Stage s of this rank. Pokes inside an op: a sleeping stage's slices under idle and
    hooks (the host is free while a device would compute), a real stage's layers under
    hooks only (:mod:`executor.transport.progress` says why)."""
    cfg, last = plan.cfg, plan.schedule.num_stages - 1
    if cfg.compute == "sleep":
        poke = progress.poke if cfg.progress in ("idle", "hooks") else None

        def like(b):
            return torch.zeros(plan.boundary[b][0], dtype=plan.boundary[b][1], device=device)

        return SleepStage(s, cfg.t_f, cfg.t_i, cfg.t_w, like(s) if s < last else None, like(s - 1) if s > 0 else None,
                          poke=poke)
    return Stage(s, layers, plan.workload.loss_fn if s == last else None, cfg.microbatches,
                 poke=progress.poke if cfg.progress == "hooks" else None, memory=memory)


def _microbatches(plan: RunPlan, topology: Topology, held: tuple[int, ...], device: torch.device) -> Microbatches:
    cfg, w, last = plan.cfg, plan.workload, plan.schedule.num_stages - 1

    def split(t: torch.Tensor, needed: bool) -> tuple[torch.Tensor, ...]:
        if not needed or t.is_meta:
            return (None,) * cfg.microbatches
        shard = t.tensor_split(cfg.dp)[topology.replica]  # each replica its share of the batch
        return tuple(mb.to(device) for mb in shard.tensor_split(cfg.microbatches))

    return Microbatches(split(w.inputs, 0 in held), split(w.targets, last in held))


def build_runtime(plan: RunPlan, topology: Topology, local_rank: int, local_size: int) -> Runtime:
    cfg, rank = plan.cfg, topology.rank
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) // local_size))
    keep_freed_memory()
    device = _device(plan, local_rank)
    held = plan.schedule.stages_of(rank)
    progress = make_progress(cfg.progress, spin=local_size <= len(os.sched_getaffinity(0)),
                             backoff=cfg.compute == "real")  # sleeping stages take no core from a poll
    check_thread_level(cfg.progress, device.type)
    layers = {s: _layers(plan, s, device) for s in held} if cfg.compute == "real" else {}
    data = _microbatches(plan, topology, held, device)
    weights = [p for group in layers.values() for layer in group for p in layer.parameters()]
    memory = MemoryMeter(weights + [t for t in (*data.inputs, *data.targets) if t is not None])
    stages = {s: _stage(plan, s, device, progress, memory, layers.get(s)) for s in held}
    oversubscribed = local_size > len(os.sched_getaffinity(0))  # then an op's CPU time is its own work
    recorder = (CpuRecorder() if device.type == "cpu" and cfg.compute == "real" and (cfg.cpu_times or oversubscribed)
                else Recorder(cuda=device.type == "cuda" and cfg.compute == "real", device_clock=device.type == "cuda",
                              memory=DeviceMemory(device) if device.type == "cuda" else None))
    wire = Wire(device, poke=progress.poke if cfg.progress in ("idle", "hooks") else None)  # waits for the device
    window = cfg.recv_window or 2 * plan.ranks
    links = make_links(cfg.comm_mode, topology.pipe_comm, plan.schedule.stage_to_rank, plan.tags, plan.boundary,
                       wire, recorder, progress, memory, window=window)
    params = {s: stage.parameters() for s, stage in stages.items()}
    reducer = GradReducer(topology, params, wire, recorder, progress, cfg.comm_mode == "async") if cfg.dp > 1 else None
    ops = plan.schedule.ops[rank]
    me = topology.world.Get_rank()
    interpreter = Interpreter(ops, stages, plan.schedule.num_stages - 1, data, links, reducer, recorder, progress, memory)
    inject(interpreter, fail=cfg.fail_rank == me, stall=cfg.stall_rank == me)
    flat = [p for group in params.values() for p in group]
    optimizer = torch.optim.SGD(flat, lr=cfg.lr) if flat else None
    return Runtime(device, stages, interpreter, recorder, progress, memory, optimizer)
