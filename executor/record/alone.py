"""Each op of each stage timed alone: the yardstick for what the executor does to its ops.

The ranks take turns in world-rank order. The rank whose turn it is runs, for every
stage it holds, ``repeats`` rounds of F then B (full backward) and ``repeats`` rounds of
F, I, W (split backward) on microbatch-sized inputs of the run's own shapes, through the
same stage objects and the same timer as the run (same threads, same process layout);
the other ranks sleep in an ``Ibarrier`` tested every millisecond, so nothing else
computes or spins. With ``together`` every rank times its ops at once instead: the same
ops with every rank of the node busy (the node's sharing, for profiles).

:func:`time_stage` is the one timing round, shared with ``executor profile``; it also
reads the memory meter around each op (bytes F holds, bytes B, I and W free).
"""

from __future__ import annotations

import statistics
import time

import torch
from mpi4py import MPI

__all__ = ["time_ops", "time_stage", "idle_barrier", "SCRATCH_MB", "KINDS"]

SCRATCH_MB = -1  # the microbatch id the timing rounds use: never one of the step's
KINDS = ("F", "B", "I", "W")


def idle_barrier(comm: MPI.Comm) -> None:
    """A barrier that sleeps instead of spinning while it waits (MPICH's Barrier polls)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(1e-3)


def stage_inputs(boundary: list, s: int, stages: int, device, first_input, last_target) -> tuple:
    """(input, target, output gradient) of one microbatch of stage ``s`` of ``stages``."""
    def like(b: int) -> torch.Tensor:
        shape, dtype = boundary[b]
        return torch.randn(shape, device=device).to(dtype)

    x = first_input if s == 0 else like(s - 1)
    target = last_target if s == stages - 1 else None
    grad = None if s == stages - 1 else like(s)
    return x, target, grad


def time_stage(stage, measure, inputs: tuple, repeats: int, memory=None) -> dict:
    """Median seconds per kind of ``repeats`` rounds of F+B and of F+I+W, after one untimed
    round of each (the first finds cold caches and fresh allocations: with the profile's
    2 rounds at a time it would be half of every median); with a memory meter also
    ``memory``: median bytes F holds and B, I, W free."""
    x, target, grad = inputs
    stage.forward(SCRATCH_MB, x, target)
    stage.backward(SCRATCH_MB, grad)
    stage.forward(SCRATCH_MB, x, target)
    stage.backward_input(SCRATCH_MB, grad)
    stage.backward_weight(SCRATCH_MB)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    moved: dict[str, list[float]] = {kind: [] for kind in KINDS}

    def timed(kind: str, fn, *args):
        before = memory.current if memory is not None else 0
        times[kind].append(measure(fn, *args))
        if memory is not None:
            moved[kind].append(abs(memory.current - before))

    for _ in range(repeats):
        timed("F", stage.forward, SCRATCH_MB, x, target)
        timed("B", stage.backward, SCRATCH_MB, grad)
    for _ in range(repeats):
        timed("F", stage.forward, SCRATCH_MB, x, target)
        timed("I", stage.backward_input, SCRATCH_MB, grad)
        timed("W", stage.backward_weight, SCRATCH_MB)
    stage.losses.clear()
    for p in stage.parameters():
        p.grad = None
    out = {kind: statistics.median(values) for kind, values in times.items()}
    if memory is not None:
        out["memory"] = {kind: float(statistics.median(values)) for kind, values in moved.items()}
    return out


def time_ops(runtime, plan, world: MPI.Comm, repeats: int = 20, together: bool = False) -> list[dict] | None:
    """Median time per (stage, kind) of every rank's ops; the list (by world rank) on rank 0."""
    me, data = world.Get_rank(), runtime.interpreter.data
    stages = plan.schedule.num_stages
    mine: dict[tuple[int, str], float] = {}
    for turn in range(world.Get_size()):
        if together or turn == me:
            for s, stage in runtime.stages.items():
                inputs = stage_inputs(plan.boundary, s, stages, runtime.device, data.inputs[0], data.targets[0])
                timed = time_stage(stage, runtime.recorder.time_call, inputs, repeats)
                mine.update({(s, kind): timed[kind] for kind in KINDS})
        idle_barrier(world)
        if together:
            break
    return world.gather(mine, root=0)  # small dicts of floats, made here
