"""``python -m executor profile`` under the bundled mpiexec: a sleep model's profile gives
back its sleeps, and a small real profile predicts a run before it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import schedules
import simulator
from executor.launch import launch

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    done = launch(2, args, timeout=240, capture=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_profile_of_sleeps_recovers_them_within_3_percent(tmp_path):
    out = _run("profile", "--compute", "sleep", "--t-f", "20", "--t-i", "10", "--t-w", "5", "--width", "64",
               "--batch", "64", "--chunks", "1", "--microbatches", "4", "--repeats", "3", "--out", str(tmp_path))
    assert "wrote" in out and "costs.json" in out
    profile = simulator.Profile.load(tmp_path / "costs.json")
    costs = profile.costs(ranks=2, chunks=1, microbatches=4)
    for got, want in ((costs.t_f, 0.020), (costs.t_i, 0.010), (costs.t_w, 0.005), (costs.t_b, 0.015)):
        for value in got:
            assert value == pytest.approx(want, rel=0.03), (got, want)
    assert profile.conditions.ranks == 2 and profile.conditions.model["compute"] == "sleep"
    assert len(profile.doc.share) == profile.conditions.ranks_per_node


def test_small_profile_predicts_a_run_before_it_runs(tmp_path):
    model = ["--width", "128", "--batch", "128", "--layers", "4", "--threads", "1"]
    _run("profile", *model, "--chunks", "1,2", "--microbatches", "4", "--repeats", "3", "--out", str(tmp_path))
    doc = json.loads((tmp_path / "costs.json").read_text())
    assert {(t["chunks"], t["microbatches"]) for t in doc["layouts"]} == {(1, 4), (2, 4)}
    assert all(t["boundary_bytes"] and len(t["stages"]) == 2 * t["chunks"] for t in doc["layouts"])
    assert all(s[k]["alone"] > 0 and s[k]["run"] > 0 for t in doc["layouts"] for s in t["stages"] for k in "FBIW")
    assert len(doc["canary"]["seconds"]) == 2 and all(t > 0 for t in doc["canary"]["seconds"])
    assert doc["links"]["pairs"] and len(set(doc["links"]["pairs"][0]["bytes"])) >= 5
    host = doc["dispatch"]  # from short real runs: every kind of host time seen
    assert 0 < host["compute"] < 1e-3 and 0 < host["send"] < 1e-2 and 0 < host["recv"] < 1e-2
    assert len(host["optimizer"]) == len(host["step"]) == 2
    profile = simulator.Profile.load(tmp_path / "costs.json")
    for name in ("1f1b", "zbv"):  # one and two chunks
        schedule = schedules.build(name, ranks=2, microbatches=4)
        assert simulator.simulate(schedule, profile.costs(schedule)).makespan > 0
    run = tmp_path / "run"
    stdout = _run("--schedule", "1f1b", "--microbatches", "4", *model, "--steps", "3", "--warmup", "1",
                  "--costs", str(tmp_path / "costs.json"), "--out", str(run))
    assert "predicted (profile)" in stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["profile_predicted_step_time"] > 0 and summary["profile_error_pct"] is not None


def test_a_layout_the_profile_lacks_is_refused_naming_what_to_profile(tmp_path):
    _run("profile", "--compute", "sleep", "--t-f", "1", "--t-i", "1", "--t-w", "1", "--width", "32", "--batch", "32",
         "--chunks", "1", "--microbatches", "4", "--repeats", "1", "--out", str(tmp_path))
    done = launch(2, ["--schedule", "1f1b", "--microbatches", "8", "--costs", str(tmp_path / "costs.json")],
                  timeout=60, capture=True, cwd=ROOT)
    assert done.returncode == 2
    assert "no layout ranks=2 chunks=1 microbatches=8" in done.stderr and "executor profile" in done.stderr
    assert "Traceback" not in done.stderr
