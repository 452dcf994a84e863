"""Test driver: many --check cases inside one mpiexec launch (start-up costs seconds per launch).

    mpiexec -n 2 python -m tests.executor_check_cases     # the p = 2 cases
    mpiexec -n 4 python -m tests.executor_check_cases     # p = 4, and p = 2 x dp = 2

(from the repository root; the world size picks the cases.)

Rank 0 prints one line per case: ``CASE <label> PASS|FAIL <verdict>``. Used by
tests/test_executor_mpi.py; not collected by pytest itself.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mpi4py import MPI

import schedules
from executor.__main__ import abort_on_failure
from executor.config import RunConfig
from executor.engine.steps import run

DATA = Path(__file__).resolve().parent / "data"
SMALL = RunConfig(model="mlp", layers=8, width=24, batch=32, microbatches=4, check=True, steps=1, warmup=0, predict=False)
BUILT_IN = tuple(schedules.names())  # every registered schedule (zb-1p, zb-2p and zb-auto among them)
TORCH_CSV = {
    2: [("executor_torch_ScheduleInterleavedZeroBubble_p2_m4_compute_comms.csv", 4),
        ("executor_torch_ScheduleZBVZeroBubble_p2_m4_compute_only.csv", 4)],
    4: [("torch_ScheduleInterleavedZeroBubble_p4_m8_compute_comms.csv", 8),
        ("torch_ScheduleZBVZeroBubble_p4_m8_compute_only.csv", 8)],
}


def cases(world: int) -> list[tuple[str, RunConfig]]:
    out = []
    for dtype in ("float64", "float32"):
        for name in BUILT_IN:
            m = 2 * world if name == "dualpipev" else SMALL.microbatches  # it needs m >= 2p
            out.append((f"{name} p={world} {dtype}", replace(SMALL, schedule=name, microbatches=m, dtype=dtype)))
        for file, m in TORCH_CSV[world]:
            out.append((f"{file} {dtype}", replace(SMALL, schedule_file=str(DATA / file), microbatches=m, dtype=dtype)))
    tf = replace(SMALL, model="transformer", layers=4, width=16, heads=2, seq_len=4, batch=8, dtype="float64")
    out.append((f"transformer zb-h1 p={world} float64", replace(tf, schedule="zb-h1")))
    comms = ("blocking", "async")
    for i, name in enumerate(("1f1b", "zb-h1", "interleaved-1f1b") if world == 4 else ()):
        chunks = 2 if name == "interleaved-1f1b" else None
        cfg = replace(SMALL, schedule=name, chunks=chunks, dp=2, comm_mode=comms[i % 2])
        out.append((f"{name} p=2 x dp=2 {cfg.comm_mode}", cfg))
    if world == 4:  # bfloat16 travels as raw bytes and is all-reduced in float32
        out.append(("1f1b p=2 x dp=2 bfloat16", replace(SMALL, dp=2, dtype="bfloat16", comm_mode="async")))
    # both semantics on every schedule would double the time: blocking takes every other case
    return [(label, cfg if i % 2 == 0 or cfg.dp > 1 else replace(cfg, comm_mode="blocking"))
            for i, (label, cfg) in enumerate(out)]


def main() -> int:
    abort_on_failure()
    world = MPI.COMM_WORLD
    failed = 0
    for label, cfg in cases(world.Get_size()):
        result = run(cfg, world)
        failed += not result.ok
        if world.Get_rank() == 0:
            print(f"CASE {label} comm={cfg.comm_mode} {'PASS' if result.ok else 'FAIL'} {result.message}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
