"""Each op of each stage timed alone: the yardstick for what the executor does to its ops.

The ranks take turns in world-rank order. The rank whose turn it is runs, for every
stage it holds, ``repeats`` rounds of F then B (full backward) and ``repeats`` rounds of
F, I, W (split backward) on microbatch-sized inputs of the run's own shapes, through the
same stage objects and the same timer as the run (same threads, same process layout);
the other ranks sleep in an ``Ibarrier`` tested every millisecond, so nothing else
computes or spins. With ``together`` every rank times its ops at once instead: the same
ops with every rank of the node busy (the node's sharing, for profiles).

The result maps (stage, kind) to the median seconds; rank 0 gathers every rank's.
"""

from __future__ import annotations

import statistics
import time

import torch
from mpi4py import MPI

__all__ = ["time_ops", "SCRATCH_MB"]

SCRATCH_MB = -1  # the microbatch id the timing rounds use: never one of the step's


def _idle_barrier(comm: MPI.Comm) -> None:
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(1e-3)


def _inputs(runtime, plan, s: int) -> tuple:
    """(input, target, output gradient) of one microbatch of stage ``s``."""
    device, last = runtime.device, plan.schedule.num_stages - 1
    data = runtime.interpreter.data

    def like(b: int) -> torch.Tensor:
        shape, dtype = plan.boundary[b]
        return torch.randn(shape, device=device).to(dtype)

    x = data.inputs[0] if s == 0 else like(s - 1)
    target = data.targets[0] if s == last else None
    grad = None if s == last else like(s)
    return x, target, grad


def _rounds(runtime, plan, s: int, repeats: int) -> dict[tuple[int, str], float]:
    stage, measure = runtime.stages[s], runtime.recorder.time_call
    x, target, grad = _inputs(runtime, plan, s)
    times: dict[str, list[float]] = {"F": [], "B": [], "I": [], "W": []}

    def timed(kind: str, fn, *args):
        times[kind].append(measure(fn, *args))

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
    return {(s, kind): statistics.median(values) for kind, values in times.items()}


def time_ops(runtime, plan, world: MPI.Comm, repeats: int = 20, together: bool = False) -> list[dict] | None:
    """Median time per (stage, kind) of every rank's ops; the list (by world rank) on rank 0."""
    me = world.Get_rank()
    mine: dict[tuple[int, str], float] = {}
    for turn in range(world.Get_size()):
        if together or turn == me:
            for s in runtime.stages:
                mine.update(_rounds(runtime, plan, s, repeats))
        _idle_barrier(world)
        if together:
            break
    return world.gather(mine, root=0)  # small dicts of floats, made here
