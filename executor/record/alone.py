"""Each op of each stage timed alone inside a run: the yardstick of ``--inflation``.

The ranks take turns in world-rank order. The rank whose turn it is runs, for every
stage it holds, ``repeats`` rounds of F then B (full backward) and ``repeats`` rounds of
F, I, W (split backward) on microbatch-sized inputs of the run's own shapes, through the
*bare* layers (:func:`executor.record.plain.bare`: no pokes, no memory meter) and the
run's timer, in the run's process layout and threads; the other ranks sleep in an
``Ibarrier`` tested every millisecond, so nothing else computes or spins. With
``together`` every rank times its ops at once instead: the same ops with every rank of
the node busy (the node's sharing, for profiles). The timing round itself,
:func:`~executor.record.plain.time_stage`, is the plain process's.
"""

from __future__ import annotations

import time

from mpi4py import MPI

from .plain import KINDS, SCRATCH_MB, bare, stage_inputs, time_stage

__all__ = ["time_ops", "time_stage", "idle_barrier", "stage_inputs", "SCRATCH_MB", "KINDS"]


def idle_barrier(world: MPI.Comm) -> None:
    """A barrier that sleeps instead of spinning while it waits (MPICH's Barrier polls)."""
    request = world.Ibarrier()
    while not request.Test():
        time.sleep(1e-3)


def time_ops(runtime, plan, world: MPI.Comm, repeats: int = 20, together: bool = False) -> list[dict] | None:
    """Median time per (stage, kind) of every rank's ops; the list (by world rank) on rank 0."""
    me, data = world.Get_rank(), runtime.interpreter.data
    stages = plan.schedule.num_stages
    mine: dict[tuple[int, str], float] = {}
    for turn in range(world.Get_size()):
        if together or turn == me:
            for s, stage in runtime.stages.items():
                inputs = stage_inputs(plan.boundary, s, stages, runtime.device, data.inputs[0], data.targets[0])
                timed = time_stage(bare(stage), runtime.recorder.time_call, inputs, repeats)
                mine.update({(s, kind): timed[kind] for kind in KINDS})
        idle_barrier(world)
        if together:
            break
    return world.gather(mine, root=0)  # small dicts of floats, made here
