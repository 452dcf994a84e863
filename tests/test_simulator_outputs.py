"""Pictures, Perfetto traces and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import schedules
import simulator
from simulator import Costs
from simulator.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result():
    costs = Costs(latency=0.05, act_bytes=1e3, bandwidth=1e5, act_memory=2e6)
    return simulator.simulate(schedules.build("zb-h1", ranks=4, microbatches=6), costs)


def test_chrome_trace_parses_with_paired_flows_in_microseconds(result, tmp_path):
    path = simulator.to_chrome_trace(result.trace, tmp_path / "t.json", act_memory=2e6)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == len(result.trace)
    first = result.trace.iloc[int(np.argmax(result.trace["end"]))]
    assert max(e["ts"] + e["dur"] for e in slices) == pytest.approx(first["end"] * 1e6)
    assert {e["tid"] for e in slices if e["cat"] == "F"} == {0}
    assert {e["tid"] for e in slices if e["cat"].startswith("SEND")} == {1}
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts and starts.keys() == ends.keys()
    assert len(starts) == (result.trace["stream"] == "send").sum()
    assert all(e["bp"] == "e" for e in ends.values())
    assert all(ends[i]["ts"] >= starts[i]["ts"] for i in starts)
    recv = [(e["pid"], e["ts"], e["ts"] + e["dur"]) for e in slices if e["tid"] == 2]
    assert all(any(pid == f["pid"] and a <= f["ts"] <= b for pid, a, b in recv) for f in ends.values())
    counters = [e for e in events if e["ph"] == "C"]
    assert max(e["args"]["bytes"] for e in counters if e["pid"] == 0) == pytest.approx(4 * 2e6)
    names = {(e["pid"], e.get("tid"), e["args"]["name"]) for e in events if e["ph"] == "M" and "name" in e["args"]}
    assert (0, None, "rank 0") in names and (3, 2, "recv") in names


def _ink(path: Path) -> float:
    image = imread(path)[..., :3]
    return float((image.mean(axis=2) < 0.95).mean())


def test_gantt_png_renders_and_is_not_blank(result, tmp_path):
    fig = simulator.plot_gantt(result.trace, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 10_000
    assert _ink(tmp_path / "g.png") > 0.05
    assert "zb-h1" in fig.axes[0].get_title() and "p=4" in fig.axes[0].get_title()
    simulator.plot_gantt(result.trace, tmp_path / "g.svg", title="custom")
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


def test_compare_shares_one_time_axis(result, tmp_path):
    blocking = simulator.simulate(result.schedule.schedule, result.costs, "blocking")
    fig = simulator.plot_compare(result.trace, blocking.trace, labels=("async", "blocking"), path=tmp_path / "c.png")
    top, bottom = fig.axes[:2]
    assert top.get_xlim() == bottom.get_xlim()
    assert top.get_xlim()[1] == pytest.approx(blocking.makespan)
    assert _ink(tmp_path / "c.png") > 0.05


def test_cli_json_keys(capsys):
    assert main(["--schedule", "1f1b", "--ranks", "4", "--microbatches", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["schedule", "ranks", "microbatches", "chunks", "comm", "makespan", "bubble_fraction", "per_rank"]
    assert out["bubble_fraction"] == pytest.approx(3 / 11)
    assert list(out["per_rank"][0]) == ["rank", "busy", "bubble_fraction", "peak_memory_bytes", "peak_inflight"]
    assert [r["peak_inflight"] for r in out["per_rank"]] == [4, 3, 2, 1]


def test_cli_writes_files_and_table(tmp_path, capsys):
    args = ["--schedule", "interleaved-1f1b", "--ranks", "2", "--microbatches", "4", "--chunks", "2",
            "--latency", "0.01", "--comm", "blocking", "--gantt", str(tmp_path / "g.png"),
            "--trace", str(tmp_path / "t.json"), "--csv", str(tmp_path / "t.csv")]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "makespan" in table and "bubble fraction" in table and "rank" in table
    trace = pd.read_csv(tmp_path / "t.csv")
    assert list(trace.columns) == simulator.TRACE_COLUMNS
    assert (tmp_path / "g.png").exists() and (tmp_path / "t.json").exists()


def test_cli_schedule_file_and_costs_from(tmp_path, capsys):
    schedule = schedules.build("zb-h1", ranks=2, microbatches=4)
    schedules.write_csv(schedule, tmp_path / "s.csv")
    measured = simulator.simulate(schedule, Costs(t_f=2.0, t_i=1.0, t_w=0.5)).trace
    measured.to_csv(tmp_path / "m.csv", index=False)
    assert main(["--schedule-file", str(tmp_path / "s.csv"), "--costs-from", str(tmp_path / "m.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["makespan"] == pytest.approx(float(measured["end"].max()))
    # an explicit flag overrides the calibrated value
    assert main(["--schedule-file", str(tmp_path / "s.csv"), "--costs-from", str(tmp_path / "m.csv"),
                 "--t-f", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["makespan"] < float(measured["end"].max())


@pytest.mark.parametrize("args, message", [
    (["--schedule", "nope"], "invalid choice"),
    (["--schedule", "1f1b", "--t-f", "-1"], "Costs.t_f must be >= 0"),
    (["--schedule", "1f1b", "--ranks", "4", "--t-f", "1,2"], "Costs.t_f has 2 values"),
    (["--schedule", "1f1b", "--bandwidth", "0"], "Costs.bandwidth must be > 0"),
    (["--schedule", "interleaved-1f1b", "--ranks", "4", "--microbatches", "9"], "divisible"),
    (["--schedule", "1f1b", "--comm", "sometimes"], "--comm"),
    (["--schedule-file", "/nonexistent.csv"], "cannot read schedule file"),
    (["--schedule", "1f1b", "--costs-from", "/nonexistent.csv"], "cannot read trace"),
    (["sweep", "--schedules", "nope"], "unknown schedule"),
    (["sweep", "--ranks", "0"], "values must be >= 1"),
])
def test_cli_bad_input_one_line_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_sweep_writes_a_tidy_table(tmp_path):
    out = tmp_path / "table.csv"
    proc = subprocess.run([sys.executable, "-m", "simulator", "sweep", "--schedules", "gpipe,1f1b,interleaved-1f1b",
                           "--ranks", "2,4", "--microbatches", "2,9", "--comm", "async,blocking", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    # gpipe and 1f1b: 2 x 2 x 2 comms each; interleaved-1f1b refuses m = 9 (torch's rounds rule)
    assert len(table) == 2 * (2 * 2 * 2) + 2 * 2
    assert set(table.columns) >= {"schedule", "ranks", "microbatches", "chunks", "comm", "makespan",
                                  "bubble_fraction", "analytic_bubble_fraction", "peak_memory_bytes"}
    assert "skipped 4" in proc.stderr and "%" in proc.stderr  # progress bar went to stderr
    closed = table.dropna(subset=["analytic_bubble_fraction"]).query("comm == 'async'")
    assert np.allclose(closed["bubble_fraction"], closed["analytic_bubble_fraction"], atol=1e-9)


def test_module_entry_point_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "simulator", "--schedule", "1f1b", "--latency", "-1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["python -m simulator: error: Costs.latency must be >= 0, got -1.0"]
