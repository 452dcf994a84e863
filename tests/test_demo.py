"""``python -m executor.demo``: writes what it lists, and exits non-zero when a step fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import schedules
from executor import demo

SIM_FILES = [f"sim-{name}-p4-m8/{file}" for name in schedules.names() for file in ("gantt.png", "trace.json")]
RUN_FILES = [f"run-1f1b-p2-m8/{file}" for file in demo.RUN_FILES]


def _fake_mpiexec(tmp_path: Path, status: int, body: str = "") -> Path:
    script = tmp_path / "fake-mpiexec"
    script.write_text(f"#!/bin/sh\n{body}\nexit {status}\n")
    script.chmod(0o755)
    return script


def test_simulated_files_written_and_missing_mpiexec_fails(tmp_path: Path, capsys):
    assert demo.main(["--out", str(tmp_path / "out"), "--mpiexec", str(tmp_path / "no-such-mpiexec")]) == 1
    assert "demo failed: profile: no mpiexec" in capsys.readouterr().err
    for name in SIM_FILES:
        assert (tmp_path / "out" / name).stat().st_size > 1000, name
    events = json.loads((tmp_path / "out" / "sim-1f1b-p4-m8" / "trace.json").read_text())["traceEvents"]
    assert sum(e.get("ph") == "X" for e in events) >= 4 * 8 * 2  # every F and B of 1f1b at least


def test_failing_executor_makes_the_demo_fail(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "simulate_all", lambda out: [])  # only the executor step matters here
    assert demo.main(["--out", str(tmp_path / "out"), "--mpiexec", str(_fake_mpiexec(tmp_path, 3))]) == 1
    assert "exited with status 3" in capsys.readouterr().err


def test_profile_that_writes_nothing_makes_the_demo_fail(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "simulate_all", lambda out: [])
    assert demo.main(["--out", str(tmp_path / "out"), "--mpiexec", str(_fake_mpiexec(tmp_path, 0))]) == 1
    assert "demo failed: profile:" in (err := capsys.readouterr().err) and "lacks costs.json" in err


def test_executor_that_writes_nothing_makes_the_demo_fail(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "simulate_all", lambda out: [])
    monkeypatch.setattr(demo, "profile_and_predict", lambda out, mpiexec: [])
    assert demo.main(["--out", str(tmp_path / "out"), "--mpiexec", str(_fake_mpiexec(tmp_path, 0))]) == 1
    assert "lacks compare.png, gantt.png, summary.json, trace.csv, trace.json" in capsys.readouterr().err


def test_hung_executor_is_ended_and_the_demo_fails(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "simulate_all", lambda out: [])
    monkeypatch.setattr(demo, "RUN_TIMEOUT_S", 0.5)
    began = time.perf_counter()
    assert demo.main(["--out", str(tmp_path / "out"), "--mpiexec", str(_fake_mpiexec(tmp_path, 0, "exec sleep 60"))]) == 1
    assert time.perf_counter() - began < 20  # SIGTERM ended the stand-in, nobody waited 60 s
    assert "no result after 0.5 s" in capsys.readouterr().err


@pytest.mark.mpi
def test_demo_end_to_end(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "executor.demo", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    for name in SIM_FILES + RUN_FILES:
        assert (tmp_path / "out" / name).is_file(), name
        assert f"out/{name}" in done.stdout, f"{name} is not listed"
    assert "predicted" in done.stdout and "ui.perfetto.dev" in done.stdout
    assert "predicted from the profile before running anything" in done.stdout
    assert "predicted (profile)" in done.stdout and "x canary" in done.stdout
    assert "op drift" in done.stdout and "model error" in done.stdout  # where the profile's error comes from
    summary = json.loads((tmp_path / "out" / "run-1f1b-p2-m8" / "summary.json").read_text())
    assert summary["schedule"] == "1f1b" and summary["ranks"] == 2 and summary["compute"] == "real"


def test_a_named_output_folder_that_holds_files_is_refused_before_any_work(tmp_path: Path, capsys):
    (tmp_path / "keep.txt").write_text("an earlier run")
    assert demo.main(["--out", str(tmp_path), "--mpiexec", str(tmp_path / "no-such-mpiexec")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # nothing simulated, nothing replaced
