"""This executor against torch.distributed.pipelining on the same model, batch and microbatches.

    .venv/bin/python bench/executor_vs_torch.py [--steps 10] [--microbatches 8] [--json]

Two ranks on this CPU. torch runs ``Schedule1F1B``, ``ScheduleGPipe``,
``ScheduleInterleaved1F1B`` (2 stages per rank, looped) and ``ScheduleZBVZeroBubble``
(2 stages per rank in a V) over the gloo backend in processes started by
``torch.multiprocessing.spawn``; ours runs 1f1b, gpipe, interleaved-1f1b --chunks 2 and
zbv under the bundled mpiexec. Both: the built-in MLP cut into equal stages (same
layers, same split), one torch thread per rank, warm-up steps, then the median of the
timed steps (a barrier before each; a step is the slower rank's). Printed per schedule:
both medians and their ratio, our overhead (measured step over the simulator's prediction
from our measured op costs, communication free), and the per-op medians (F, B or I/W
per rank) of both sides, so a difference can be traced to the ops or to what lies
between them. torch's ops are timed around its stage's ``forward_one_chunk``,
``backward_one_chunk`` and ``backward_weight_one_chunk``.

``--json`` prints one object per schedule per line: schedule, torch_ms, ours_ms, ratio
(and the per-op medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import schedules  # noqa: E402
import simulator  # noqa: E402
from simulator.calibrate import costs_from_trace  # noqa: E402
from executor.config import RunConfig  # noqa: E402
from executor.launch import launch  # noqa: E402

RANKS = 2
# ours -> (torch class, chunks, stage indices of rank r)
SCHEDULES = {
    "1f1b": ("Schedule1F1B", 1, lambda r: [r]),
    "gpipe": ("ScheduleGPipe", 1, lambda r: [r]),
    "interleaved-1f1b": ("ScheduleInterleaved1F1B", 2, lambda r: [r, r + RANKS]),
    "zbv": ("ScheduleZBVZeroBubble", 2, lambda r: [r, 2 * RANKS - 1 - r]),
}


def _timed(stage, times: list, on: list) -> None:
    """Record (rank, kind, seconds) around the stage's compute entry points while on[0]."""
    def wrap(name: str, kind_of):
        inner = getattr(stage, name)

        def run(*args, **kwargs):
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            if on[0]:
                times.append((stage.stage_index, kind_of(kwargs), time.perf_counter() - start))
            return out
        setattr(stage, name, run)

    wrap("forward_one_chunk", lambda kw: "F")
    wrap("backward_one_chunk", lambda kw: "B" if kw.get("full_backward", True) else "I")
    wrap("backward_weight_one_chunk", lambda kw: "W")


def torch_worker(rank: int, cfg: RunConfig, schedule: str, port: int, out: str) -> None:
    import torch.distributed as dist
    import torch.distributed.pipelining as pp

    from executor.compute.model import build_workload

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS)
    cls_name, chunks, indices = SCHEDULES[schedule]
    stages_total = RANKS * chunks
    work = build_workload(cfg)
    per = len(work.layers) // stages_total
    rows = cfg.batch // cfg.microbatches
    op_times: list = []
    timing = [False]
    stages, modules = [], []
    for index in indices(rank):
        module = torch.nn.Sequential(*work.layers[index * per:(index + 1) * per])
        example = work.inputs[:rows] if index == 0 else torch.zeros(rows, cfg.width)
        stage = pp.PipelineStage(module, index, stages_total, torch.device("cpu"), input_args=(example,))
        _timed(stage, op_times, timing)
        stages.append(stage)
        modules.append(module)
    cls = getattr(pp, cls_name)
    runner = cls(stages[0] if chunks == 1 else stages, cfg.microbatches, loss_fn=work.loss_fn)
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=cfg.lr)
    first, last = 0 in indices(rank), stages_total - 1 in indices(rank)
    times = []
    for step in range(cfg.warmup + cfg.steps):
        optimizer.zero_grad()
        timing[0] = step >= cfg.warmup
        dist.barrier()
        start = time.perf_counter()
        args = (work.inputs,) if first else ()
        kwargs = {"target": work.targets, "losses": []} if last else {}
        runner.step(*args, **kwargs)
        optimizer.step()
        end = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(end, op=dist.ReduceOp.MAX)  # the slower rank's step
        if step >= cfg.warmup:
            times.append(float(end))
    gathered = [None] * RANKS
    dist.all_gather_object(gathered, [(rank, *t) for t in op_times])
    if rank == 0:
        Path(out).write_text(json.dumps({"times": times, "ops": [t for part in gathered for t in part]}))
    dist.destroy_process_group()


def _op_medians(rows) -> dict[str, float]:
    """'r<rank> <kind>' -> median ms, over every stage of the rank."""
    by = defaultdict(list)
    for rank, _stage, kind, seconds in rows:
        by[f"r{rank} {kind}"].append(seconds * 1e3)
    return {key: statistics.median(v) for key, v in sorted(by.items())}


def run_torch(cfg: RunConfig, schedule: str, work: Path) -> tuple[float, dict]:
    out = work / f"torch-{schedule}.json"
    port = 29500 + (os.getpid() + len(schedule)) % 1000
    torch.multiprocessing.spawn(torch_worker, args=(cfg, schedule, port, str(out)), nprocs=RANKS, join=True)
    data = json.loads(out.read_text())
    return statistics.median(data["times"]), _op_medians(data["ops"])


def run_ours(cfg: RunConfig, schedule: str, work: Path) -> tuple[float, float, dict]:
    """(median step time, prediction from op costs alone with free communication, op medians)."""
    out = work / f"ours-{schedule}"
    chunks = SCHEDULES[schedule][1]
    args = ["--schedule", schedule, "--model", "mlp", "--layers", str(cfg.layers), "--width", str(cfg.width),
            "--batch", str(cfg.batch), "--microbatches", str(cfg.microbatches), "--seed", str(cfg.seed),
            "--steps", str(cfg.steps), "--warmup", str(cfg.warmup), "--threads", "1", "--out", str(out)]
    if chunks > 1:
        args += ["--chunks", str(chunks)]
    done = launch(RANKS, args, timeout=900, capture=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"executor failed:\n{done.stdout}\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    trace = pd.read_csv(out / "trace_steps.csv")
    costs = costs_from_trace(trace)
    compute_only = replace(costs, latency=0.0, bandwidth=float("inf"))
    lowered = schedules.validate(schedules.build(schedule, ranks=RANKS, microbatches=cfg.microbatches,
                                                 chunks=chunks if chunks > 1 else None))
    compute = trace[trace["kind"].isin(["F", "B", "I", "W"])]
    ops = _op_medians(zip(compute["rank"], compute["stage"], compute["kind"], compute["end"] - compute["start"]))
    return summary["measured_step_time"], simulator.simulate(lowered, compute_only).makespan, ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default %(default)s)")
    parser.add_argument("--microbatches", type=int, default=8, help="microbatches per step (default %(default)s)")
    parser.add_argument("--width", type=int, default=512, help="MLP hidden width (default %(default)s)")
    parser.add_argument("--batch", type=int, default=512, help="rows of the full batch (default %(default)s)")
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated (default: all four)")
    parser.add_argument("--json", action="store_true", help="one JSON object per schedule per line")
    args = parser.parse_args(argv)
    names = args.schedules.split(",")
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        parser.error(f"unknown schedule(s) {', '.join(unknown)}; choose from {', '.join(SCHEDULES)}")
    cfg = RunConfig(layers=8, width=args.width, batch=args.batch, microbatches=args.microbatches,
                    steps=args.steps, warmup=3)
    if not args.json:
        print(f"mlp: {cfg.layers} layers x {cfg.width} wide, batch {cfg.batch}, {cfg.microbatches} microbatches, "
              f"{RANKS} ranks, 1 thread each; medians over {cfg.steps} timed steps after {cfg.warmup} warm-up")
        print(f"{'schedule':17}{'torch gloo (ms)':>16}{'ours (ms)':>11}{'ours/torch':>12}"
              f"{'ops-only pred (ms)':>20}{'overhead':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            theirs, their_ops = run_torch(cfg, name, Path(tmp))
            ours, ideal, our_ops = run_ours(cfg, name, Path(tmp))
            if args.json:
                print(json.dumps({"schedule": name, "torch_ms": theirs * 1e3, "ours_ms": ours * 1e3,
                                  "ratio": ours / theirs, "overhead": ours / ideal,
                                  "torch_op_ms": their_ops, "ours_op_ms": our_ops}), flush=True)
                continue
            print(f"{name:17}{theirs * 1e3:>16.2f}{ours * 1e3:>11.2f}{ours / theirs:>12.3f}"
                  f"{ideal * 1e3:>20.2f}{ours / ideal:>10.3f}")
            keys = sorted(set(their_ops) | set(our_ops))
            print("    per-op medians (ms): " + "  ".join(
                f"{k}: torch {their_ops.get(k, float('nan')):.3f} ours {our_ops.get(k, float('nan')):.3f}"
                for k in keys), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
