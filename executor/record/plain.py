"""The yardstick: each stage's ops timed in a plain process: the bare layers, no hooks,
no memory meter, no MPI.

    python -m executor.record.plain --ranks 2 --microbatches 8 [model flags] [--repeats 40]

An op inside a run is compared with this, never only with our own instrumented copy of
it (an instrument must not be its own reference). It builds the run's workload from the
same flags and seed, cuts it into the same model stages (``--ranks`` x ``--chunks``,
``--balance``), and times each stage's F, B (fused), I and W on microbatch-sized
inputs of the run's shapes with :func:`time_stage`, at the run's thread count. It
prints one JSON object: ``{"stages": [{"F": s, "B": s, "I": s, "W": s}, ...]}``
(medians, seconds), which ``bench/executor_overhead.py`` sets beside a run.

:func:`time_stage` is also the one timing round of ``--inflation`` (ops alone inside a
run, the other ranks asleep: :mod:`executor.record.alone`). Nothing here imports MPI.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Callable

import torch

from ..compute.model import build_workload, stage_bounds, stage_shapes
from ..compute.stage import SleepStage, Stage
from ..config import RunConfig, UsageError, build_parser

__all__ = ["time_stage", "stage_inputs", "bare", "time_plain", "perf_call", "KINDS", "SCRATCH_MB"]

SCRATCH_MB = -1  # the microbatch id the timing rounds use: never one of the step's
KINDS = ("F", "B", "I", "W")


def perf_call(fn: Callable, *args) -> float:
    """Seconds ``fn(*args)`` takes on the host clock."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bare(stage):
    """The same stage without pokes or memory meter: the plain layers (a sleeping stage is
    its own bare self)."""
    if isinstance(stage, SleepStage):
        return stage
    return Stage(stage.index, stage.layers, stage.loss_fn, round(1 / stage.scale))


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
    round of each (the first finds cold caches and fresh allocations: with 2 rounds at a
    time it would be half of every median); with a memory meter also ``memory``: median
    bytes F holds and B, I, W free."""
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


def time_plain(cfg: RunConfig, ranks: int, chunks: int = 1, repeats: int = 40) -> list[dict[str, float]]:
    """Median seconds of F, B, I and W of every model stage of the run ``cfg`` at ``ranks``
    pipeline ranks and ``chunks`` stages a rank, timed in this process on bare layers."""
    torch.set_num_threads(cfg.threads or 1)
    workload = build_workload(cfg)
    stages = ranks * chunks
    bounds = stage_bounds(workload.layers, stages, cfg.balance)
    rows = workload.inputs.shape[0] // (cfg.dp * cfg.microbatches)
    if rows < 1:
        raise UsageError(f"the batch of {workload.inputs.shape[0]} rows has no row a microbatch at "
                         f"dp x microbatches = {cfg.dp * cfg.microbatches}")
    boundary = stage_shapes(workload, bounds, rows)
    x0, y0 = workload.inputs[:rows], workload.targets[:rows]
    out = []
    for s, (start, stop) in enumerate(bounds):
        stage = Stage(s, list(workload.layers[start:stop]), workload.loss_fn if s == stages - 1 else None,
                      cfg.microbatches)
        inputs = stage_inputs(boundary, s, stages, torch.device("cpu"), x0, y0)
        out.append({kind: t for kind, t in time_stage(stage, perf_call, inputs, repeats).items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(conflict_handler="resolve")
    parser.prog = "python -m executor.record.plain"
    parser.description = "Time each stage's F, B, I, W in a plain process (bare layers, no MPI); print JSON."
    parser.add_argument("--ranks", type=int, default=2, help="pipeline ranks of the run compared (default 2)")
    parser.add_argument("--repeats", type=int, default=40, help="rounds per op; medians (default 40)")
    try:
        ns = vars(parser.parse_args(argv))
        ranks, repeats = ns.pop("ranks"), ns.pop("repeats")
        cfg = RunConfig(**ns)
        if ranks < 1 or repeats < 1:
            raise UsageError("--ranks and --repeats must be >= 1")
        if cfg.compute != "real":
            raise UsageError("a plain process times real compute only")
        stages = time_plain(cfg, ranks, cfg.chunks or 1, repeats)
    except UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"stages": stages, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
