"""The canary: one fixed op, timed by the profile and again just before a run.

This machine drifts: one op held within about 2 % for a minute but ran 25 % faster an
hour later (REFERENCE.md, 2026-12-04). A prediction made from a profile taken earlier
carries that drift, and nothing in the model can tell it from a model error. So the
profile records the time of one op that never changes (:data:`CANARY`: a float32
matmul of fixed shape on the rank's threads, or a larger one on its GPU timed by CUDA
events, median of :data:`SAMPLES` calls), and a
run with ``--costs`` times it again after its warm-up, just before its timed steps;
``canary_drift`` (now over then) says how much faster or slower the machine is, and
``--canary`` scales the profile's compute costs by it. Both timings take the ranks in
turn with the others asleep, as the profile's ops alone are timed.

:func:`time_canary` needs no MPI (``bench/noise.py`` times it in one-second windows).
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Callable

import torch

__all__ = ["CANARY", "SAMPLES", "describe", "canary_op", "time_canary", "canary_in_turns", "drift"]

SHAPE = (256, 512, 512)  # (rows, inner, columns): about 2 ms on one thread of this machine
GPU_SHAPE = (4096, 4096, 4096)  # large enough that the kernel, not its launch, is what is timed on a GPU
CANARY = f"float32 matmul {SHAPE[0]}x{SHAPE[1]} @ {SHAPE[1]}x{SHAPE[2]}"
SAMPLES = 40


def describe(device: torch.device | str = "cpu") -> str:
    """The canary op on ``device``, in words (recorded in the profile beside its time)."""
    rows, inner, cols = GPU_SHAPE if torch.device(device).type == "cuda" else SHAPE
    return f"float32 matmul {rows}x{inner} @ {inner}x{cols} on {torch.device(device).type}"


def canary_op(device: torch.device | str = "cpu") -> Callable[[], None]:
    """The canary op, ready to call on ``device``: its inputs are fixed (seeded), so every
    call does the same."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    rows, inner, cols = GPU_SHAPE if device.type == "cuda" else SHAPE
    a = torch.randn(rows, inner, generator=g).to(device)
    b = torch.randn(inner, cols, generator=g).to(device)
    out = torch.empty(rows, cols, device=device)
    return partial(torch.mm, a, b, out=out)


def time_canary(samples: int = SAMPLES, device: torch.device | str = "cpu") -> float:
    """Median seconds of the canary op over ``samples`` calls (after 3 untimed ones), on
    this process's torch threads, or on the GPU timed by CUDA events."""
    device = torch.device(device)
    op = canary_op(device)
    for _ in range(3):
        op()
    times = []
    for _ in range(samples):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            op()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            op()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def canary_in_turns(world, device: torch.device | str = "cpu") -> list[float]:
    """Every rank's canary on ``device``, timed in turn (the others asleep in a sleeping
    barrier); the list, by rank, on every rank. Collective over ``world``."""
    from .alone import idle_barrier  # MPI, imported on use

    mine = 0.0
    for turn in range(world.Get_size()):
        if turn == world.Get_rank():
            mine = time_canary(device=device)
        idle_barrier(world)
    return world.allgather(mine)  # floats made here


def drift(now: list[float], then: list[float]) -> float:
    """The machine's speed change since ``then``: the median over ranks of now / then (> 1:
    slower now). Ranks beyond the shorter list are left out."""
    ratios = [a / b for a, b in zip(now, then) if b > 0]
    return statistics.median(ratios) if ratios else 1.0
