"""The executor under the bundled mpiexec: exact gradients, timing against the closed form
and the simulator, overlap, failure handling and refused arguments."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import schedules
from executor.launch import launch
from timeline import TRACE_COLUMNS

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parent.parent
DRIVER = "tests.executor_check_cases"


def executor(n: int, *args: str, timeout: float = 120, module: str = "executor") -> subprocess.CompletedProcess:
    """``mpiexec -n n python -m module *args`` from the repository root (tests.* and tests/data resolve)."""
    return launch(n, args, timeout=timeout, capture=True, module=module, cwd=ROOT)


def _cases(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("CASE ")]


@pytest.mark.parametrize("ranks", [2, 4])
def test_check_matches_single_process(ranks):
    """Every registered schedule (zb-auto among them), two torch-written CSVs, float64 and float32,
    alternating async/blocking, and a transformer; with 4 ranks also p = 2 x dp = 2
    (float32 and bfloat16)."""
    from tests.executor_check_cases import cases

    expected = len(cases(ranks))
    done = executor(ranks, timeout=400, module=DRIVER)
    lines = _cases(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(lines) == expected, done.stdout
    assert all(" PASS check passed" in line for line in lines), "\n".join(lines)
    assert any("dp=2" in line for line in lines) == (ranks == 4)
    assert all(any(line.startswith(f"CASE {name} p={ranks}") for line in lines) for name in schedules.names())


def test_check_fails_naming_the_parameter():
    done = executor(2, "--model", "tests.executor_factories:dropout", "--microbatches", "2", "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "check FAILED: parameter 0.0.weight" in done.stdout or "check FAILED: loss" in done.stdout


def test_factory_model_and_balance(tmp_path):
    done = executor(2, "--model", "tests.executor_factories:tiny", "--balance", "3,1", "--microbatches", "4",
                    "--check", "--dtype", "float64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check passed" in done.stdout


@pytest.fixture(scope="module")
def sleep_1f1b(tmp_path_factory):
    out = tmp_path_factory.mktemp("sleep")
    # 40/20/20 ms ops: scheduling delays of a loaded 2-core machine (~1 ms) stay small beside them
    done = executor(4, "--schedule", "1f1b", "--microbatches", "8", "--compute", "sleep", "--t-f", "40",
                    "--t-i", "20", "--t-w", "20", "--steps", "3", "--warmup", "1", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_sleep_bubble_matches_closed_form(sleep_1f1b):
    out, _ = sleep_1f1b
    summary = json.loads((out / "summary.json").read_text())
    analytic = schedules.analytic.bubble_fraction("1f1b", 4, 8)  # (p - 1) / (m + p - 1) = 3/11
    assert summary["analytic_bubble_fraction"] == pytest.approx(analytic, abs=0.005)
    assert abs(summary["measured_bubble_fraction"] - analytic) <= 0.03, summary


def test_sleep_prediction_within_5_percent(sleep_1f1b):
    out, stdout = sleep_1f1b
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["error_pct"]) <= 5.0, summary
    assert "step time (ms)" in stdout and "bubble fraction" in stdout


def test_outputs_follow_the_trace_schema(sleep_1f1b):
    out, _ = sleep_1f1b
    for name in ("trace.csv", "trace.json", "gantt.png", "summary.json", "compare.png"):
        assert (out / name).stat().st_size > 0, name
    trace = pd.read_csv(out / "trace.csv")
    assert list(trace.columns) == TRACE_COLUMNS
    lowered = schedules.validate(schedules.build("1f1b", ranks=4, microbatches=8))
    ran = sorted(f"{r.rank}:{r.stage}{r.kind}{r.mb}" for r in trace.itertuples() if r.kind != "OPTIMIZER")
    assert ran == sorted(f"{rank}:{op}" for rank, op in lowered)
    assert (trace["end"] >= trace["start"]).all()
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)


def test_async_overlaps_transfers_blocking_does_not(tmp_path):
    """GPipe, 16 MiB activations beside 10/5/5 ms sleeps: async hides the transfers that
    blocking (rendezvous) serialises; the simulator predicts about 21% here."""
    runs = {}
    for comm in ("async", "blocking"):
        done = executor(2, "--schedule", "gpipe", "--microbatches", "8", "--compute", "sleep", "--t-f", "10",
                        "--t-i", "5", "--t-w", "5", "--width", "2048", "--batch", "16384", "--steps", "3",
                        "--warmup", "1", "--comm", comm, "--out", str(tmp_path / comm))
        assert done.returncode == 0, done.stdout + done.stderr
        runs[comm] = json.loads((tmp_path / comm / "summary.json").read_text())
    fast, slow = runs["async"], runs["blocking"]
    assert fast["measured_step_time"] < 0.9 * slow["measured_step_time"], (fast, slow)
    assert fast["predicted_step_time"] < 0.9 * slow["predicted_step_time"]


def test_exception_on_one_rank_ends_the_job():
    start = time.monotonic()
    done = executor(2, "--schedule", "1f1b", "--microbatches", "4", "--width", "64", "--batch", "64",
                    "--fail-rank", "1", "--no-predict", timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode != 0
    assert "rank 1 failed" in done.stderr and "InjectedFailure" in done.stderr


BAD = [
    (3, ["--dp", "2"], "not divisible by --dp 2"),
    (2, ["--schedule", "interleaved-1f1b", "--chunks", "2", "--microbatches", "7", "--batch", "448"], "interleaved"),
    (2, ["--layers", "1"], "fewer than its 2 model stages"),
    (2, ["--schedule-file", "tests/data/torch_ScheduleGPipe_p4_m8_compute_only.csv", "--microbatches", "8"],
     "names 4 ranks"),
    (2, ["--model", "no_such_package.models:factory"], "cannot import no_such_package.models"),
]


@pytest.mark.parametrize("ranks, args, message", BAD, ids=["world", "schedule", "layers", "csv", "factory"])
def test_bad_arguments_exit_2(ranks, args, message):
    done = executor(ranks, *args, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("executor:")]) == 1
