"""Serial, process-pool and MPI sweeps give the same results (planner and simulator sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.workers import Workers, mpi_world_size, open_workers

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
PLAN = ["-m", "planner", "--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--top", "4",
        "--json", "--quiet"]
SWEEP = ["-m", "simulator", "sweep", "--schedules", "all", "--ranks", "2,4", "--microbatches", "4,8",
         "--bandwidth", "1e9", "--act-bytes", "1e6", "--quiet"]


def _run(args, launcher=()) -> str:
    proc = subprocess.run([*launcher, sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _square(x: int) -> int:
    return x * x


def test_every_mode_maps_in_job_order():
    jobs = list(range(20))
    with open_workers(1) as serial, open_workers(2) as pool:
        assert serial.mode == "serial" and pool.mode == "pool"
        assert serial.map(_square, jobs) == pool.map(_square, jobs) == [x * x for x in jobs]
    assert mpi_world_size() == 1 and Workers("serial").map(_square, []) == []


def test_planner_pool_equals_serial():
    serial = json.loads(_run(PLAN + ["--workers", "1"]))
    assert serial and serial == json.loads(_run(PLAN + ["--workers", "2"]))


def test_sweep_pool_equals_serial():
    serial = _run(SWEEP + ["--workers", "1"])
    assert len(serial.splitlines()) > 10 and serial == _run(SWEEP + ["--workers", "2"])


@pytest.mark.mpi
def test_mpi_equals_serial_for_planner_and_sweep():
    launcher = (str(MPIEXEC), "-n", "2")
    assert json.loads(_run(PLAN, launcher)) == json.loads(_run(PLAN + ["--workers", "1"]))
    assert _run(SWEEP, launcher) == _run(SWEEP + ["--workers", "1"])
