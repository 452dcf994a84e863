"""This executor against torch.distributed.pipelining on the same model, batch and microbatches.

    .venv/bin/python bench/executor_vs_torch.py [--steps 10] [--microbatches 8]

Two ranks on this CPU, 1F1B and GPipe. torch runs ``Schedule1F1B`` / ``ScheduleGPipe`` over
the gloo backend in processes started by ``torch.multiprocessing.spawn``; ours runs under
the bundled mpiexec. Both: the built-in MLP (same layers, same split: 4 layers per
stage), one torch thread per rank, warm-up steps, then the median of timed steps (a
barrier before each). Printed: both medians and their ratio, and our overhead, the
measured step time over the simulator's prediction from the measured op costs alone
(communication free).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import schedules  # noqa: E402
import simulator  # noqa: E402
from executor.config import RunConfig  # noqa: E402
from executor.launch import launch  # noqa: E402

RANKS = 2


def model_flags(cfg: RunConfig) -> list[str]:
    return ["--model", "mlp", "--layers", str(cfg.layers), "--width", str(cfg.width), "--batch", str(cfg.batch),
            "--microbatches", str(cfg.microbatches), "--seed", str(cfg.seed)]


def torch_worker(rank: int, cfg: RunConfig, schedule: str, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from executor.compute.model import build_workload

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS)
    work = build_workload(cfg)
    per = len(work.layers) // RANKS
    module = torch.nn.Sequential(*work.layers[rank * per:(rank + 1) * per])
    rows = cfg.batch // cfg.microbatches
    example = work.inputs[:rows] if rank == 0 else torch.zeros(rows, cfg.width)
    stage = PipelineStage(module, rank, RANKS, torch.device("cpu"), input_args=(example,))
    cls = Schedule1F1B if schedule == "1f1b" else ScheduleGPipe
    runner = cls(stage, cfg.microbatches, loss_fn=work.loss_fn)
    optimizer = torch.optim.SGD(module.parameters(), lr=cfg.lr)
    times = []
    for step in range(cfg.warmup + cfg.steps):
        optimizer.zero_grad()
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            runner.step(work.inputs)
        else:
            runner.step(target=work.targets, losses=[])
        optimizer.step()
        end = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(end, op=dist.ReduceOp.MAX)  # the slower rank's step
        if step >= cfg.warmup:
            times.append(float(end))
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def run_torch(cfg: RunConfig, schedule: str, work: Path) -> float:
    out = work / f"torch-{schedule}.json"
    port = 29500 + os.getpid() % 1000
    torch.multiprocessing.spawn(torch_worker, args=(cfg, schedule, port, str(out)), nprocs=RANKS, join=True)
    return statistics.median(json.loads(out.read_text()))


def run_ours(cfg: RunConfig, schedule: str, work: Path) -> tuple[float, float]:
    """(median step time, prediction from op costs alone with free communication)."""
    out = work / f"ours-{schedule}"
    args = ["--schedule", schedule, *model_flags(cfg), "--steps", str(cfg.steps), "--warmup", str(cfg.warmup),
            "--threads", "1", "--out", str(out)]
    done = launch(RANKS, args, timeout=900, capture=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"executor failed:\n{done.stdout}\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    costs = simulator.Costs.from_trace(pd.read_csv(out / "trace_steps.csv"))
    compute_only = replace(costs, latency=0.0, bandwidth=float("inf"))
    lowered = schedules.validate(schedules.build(schedule, ranks=RANKS, microbatches=cfg.microbatches))
    return summary["measured_step_time"], simulator.simulate(lowered, compute_only).makespan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default %(default)s)")
    parser.add_argument("--microbatches", type=int, default=8, help="microbatches per step (default %(default)s)")
    parser.add_argument("--width", type=int, default=512, help="MLP hidden width (default %(default)s)")
    parser.add_argument("--batch", type=int, default=512, help="rows of the full batch (default %(default)s)")
    args = parser.parse_args(argv)
    cfg = RunConfig(layers=8, width=args.width, batch=args.batch, microbatches=args.microbatches,
                    steps=args.steps, warmup=3)
    print(f"mlp: {cfg.layers} layers x {cfg.width} wide, batch {cfg.batch}, {cfg.microbatches} microbatches, "
          f"{RANKS} ranks, 1 thread each; medians over {cfg.steps} timed steps after {cfg.warmup} warm-up")
    print(f"{'schedule':9}{'torch gloo (ms)':>17}{'ours (ms)':>11}{'ours/torch':>12}{'ops-only pred (ms)':>20}{'overhead':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in ("1f1b", "gpipe"):
            theirs = run_torch(cfg, schedule, Path(tmp))
            ours, ideal = run_ours(cfg, schedule, Path(tmp))
            print(f"{schedule:9}{theirs * 1e3:>17.2f}{ours * 1e3:>11.2f}{ours / theirs:>12.3f}"
                  f"{ideal * 1e3:>20.2f}{ours / ideal:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
