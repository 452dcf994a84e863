"""--profile: the planner searches what a costs.json covers, costed from it; the FLOPs model
against a profile; --verify with the profile's model flags (one MPI test)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

import schedules
from planner.cli import main
from planner.efficiency import efficiency_table, flops_per_row, format_efficiency
from planner.profile_cli import profiled_executor_args
from planner.profiled import ProfilePlanConfig, enumerate_profiled, plan_profiled, simulate_profiled
from planner.search import Plan
from simulator import Profile
from simulator.workers import Workers, open_workers

T_F, T_B, T_I, T_W = 1.0, 2.0, 1.0, 1.0  # uniform stages: the bubble formulas hold exactly
GRAD = 4e6


def _stage() -> dict:
    times = {"F": T_F, "B": T_B, "I": T_I, "W": T_W}
    return {**{op: {"alone": t, "concurrent": t} for op, t in times.items()},
            "memory": {"F": 1000.0, "B": 1000.0, "I": 600.0, "W": 400.0}, "grad_bytes": GRAD}


def _layout(chunks: int, m: int, ranks: int = 2) -> dict:
    stages = ranks * chunks
    return {"ranks": ranks, "chunks": chunks, "microbatches": m, "dp": 1, "stages": [_stage() for _ in range(stages)],
            "boundary_bytes": [2048.0] * (stages - 1), "optimizer": [0.0] * ranks}


def _document(layouts: list[dict], model: dict | None = None, ranks: int = 2) -> dict:
    """Free links, no node sharing, no interference: only the schedule shapes the step."""
    return {"format": "pipebubble-costs", "version": 1,
            "conditions": {"host": "lab", "ranks": ranks, "ranks_per_node": ranks, "threads": 1, "dtype": "float32",
                           "device": "cpu", "torch": "2.13.0", "mpi": "MPICH", "date": "2026-12-01T09:00:00Z",
                           "model": model or {"model": "mlp", "layers": 4, "width": 512, "batch": 64}},
            "share": [1.0] * ranks, "comm_interference": 0.0,
            "links": {"latency": 0.0, "bandwidth": None, "pairs": []}, "layouts": layouts}


def _config(doc: dict, cap: float = 1e12) -> ProfilePlanConfig:
    return ProfilePlanConfig(Profile(doc), cap, tuple(schedules.names()))


def _write(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_the_search_is_what_the_profile_covers():
    config = _config(_document([_layout(1, 4), _layout(2, 8)]))
    layouts = enumerate_profiled(config, skipped := [])
    from schedules.registry import accepts

    want = {(name, c, m) for name in schedules.names() for c, m in ((1, 4), (2, 8)) if accepts(name, 2, m, c)}
    assert {(x.schedule, x.chunks, x.microbatches) for x in layouts} == want
    assert {("naive", 1, 4), ("1f1b", 1, 4), ("zb-h1", 1, 4), ("interleaved-1f1b", 2, 8), ("zbv", 2, 8)} <= want
    assert all(x.pp == 2 and x.dp == 1 for x in layouts)
    assert {x.microbatch_size for x in layouts} == {64 // 4, 64 // 8}  # rows = batch / (dp m)
    assert any("zbv" in why and "chunks" in why for why in skipped)


def test_step_times_are_the_closed_forms_at_the_profiled_costs():
    search = plan_profiled(_config(_document([_layout(1, 4)])), Workers("serial"))
    step = {p.layout.schedule: p.step_time for p in search.plans}
    m, p = 4, 2
    assert step["gpipe"] == pytest.approx((m + p - 1) * (T_F + T_B))  # 15
    assert step["1f1b"] == pytest.approx((m + p - 1) * (T_F + T_B))
    assert step["naive"] == pytest.approx(m * p * (T_F + T_B))  # 24
    assert step["zb-h1"] == pytest.approx(m * (T_F + T_I + T_W) + (p - 1) * (T_F + T_I - T_W))  # 13
    assert search.plans[0].layout.schedule == "zb-h1"
    plan = search.plans[0]
    assert plan.memory.parts["weights"] == plan.memory.parts["gradients"] == GRAD  # one stage a rank
    assert plan.memory.parts["buffers"] == 2048.0  # one boundary: rank 1 receives forwards, rank 0 gradients
    assert plan.bubble_fraction == pytest.approx(1 - 2 * m * (T_F + T_I + T_W) / (p * step["zb-h1"]))


def test_a_process_pool_gives_the_serial_plans():
    config = _config(_document([_layout(1, 4), _layout(2, 8)]))
    serial = plan_profiled(config, Workers("serial")).plans
    with open_workers(2) as pool:
        pooled = plan_profiled(config, pool).plans
    assert json.dumps([p.row() for p in pooled]) == json.dumps([p.row() for p in serial])  # NaN MFU: compare text


def test_a_cap_rejects_layouts_by_the_part_that_overflows():
    search = plan_profiled(_config(_document([_layout(1, 4)]), cap=1.5 * GRAD), Workers("serial"))
    assert search.plans == [] and {c.overflow for c in search.candidates} == {"gradients"}


def test_cli_ranks_the_profiled_layouts(tmp_path, capsys):
    path = _write(tmp_path, _document([_layout(1, 4), _layout(2, 8)]))
    csv = tmp_path / "plan.csv"
    assert main(["--profile", path, "--json", "--quiet", "--workers", "1", "--csv", str(csv)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["schedule"] == "zb-h1" and rows[0]["step_time"] == pytest.approx(13.0)
    assert [r["step_time"] for r in rows] == sorted(r["step_time"] for r in rows)
    assert {"schedule", "pp", "dp", "chunks", "microbatches", "microbatch_size", "step_time", "bubble_fraction",
            "peak_memory_bytes", "tokens_per_s", "mfu"} <= set(rows[0])
    assert csv.read_text().count("\n") == len(rows) + 1


@pytest.mark.parametrize("extra, message", [
    (["--chunks", "3"], "covers no layout to plan"),
    (["--schedules", "zbv", "--chunks", "1"], "covers no layout to plan"),
    (["--gpus", "4"], "the profile ran on 2 ranks"),
    (["--global-batch", "32"], "the profile measured --batch 64"),
    (["--model", "gpt3-175b"], "drop --model"),
    (["--set", "model.layers=2"], "--set sets the FLOPs model"),
    (["--recompute", "full"], "without recomputation"),
    (["--verify", "0"], "--verify must be >= 1"),
])
def test_cli_refuses_what_the_profile_cannot_answer(tmp_path, capsys, extra, message):
    path = _write(tmp_path, _document([_layout(1, 4)]))
    assert main(["--profile", path, "--quiet", "--workers", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("content, message", [(None, "cannot read costs file"), ("{", "is not a costs.json"),
                                              ('{"format": "x"}', "")])
def test_cli_bad_profile_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "costs.json"
    if content is not None:
        path.write_text(content)
    assert main(["--profile", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m planner: error: --profile:") and message in err and len(err.splitlines()) == 1


def _transformer_doc(efficiency: float, peak: float) -> dict:
    """The executor's transformer (h 64, a 4, s 8, one layer a stage) with F taking its
    FLOPs at ``efficiency`` of ``peak`` and B at half that efficiency."""
    h, s, batch, m = 64, 8, 8, 4
    params = 12 * h * h + 13 * h  # nn.TransformerEncoderLayer(h, a, 4h)
    forward = (2 * 12 * h * h * s + 4 * s * s * h) * (batch // m)  # matmuls + attention scores, per microbatch
    layout = _layout(1, m)
    for stage in layout["stages"]:
        stage["grad_bytes"] = 4.0 * params
        stage["F"] = {"alone": forward / peak / efficiency, "concurrent": forward / peak / efficiency}
        stage["B"] = {"alone": 2 * forward / peak / (efficiency / 2), "concurrent": 1.0}
    return _document([layout], {"model": "transformer", "layers": 2, "width": h, "heads": 4, "seq_len": s,
                                "batch": batch, "compute": "real", "seed": 0})


def test_the_flops_model_against_a_profile_reads_back_the_efficiency():
    peak = 1e10
    profile = Profile(_transformer_doc(0.3, peak))
    table = efficiency_table(profile, peak)
    assert list(table["layers"]) == [1, 1] and list(table["rows"]) == [2, 2]
    assert table["efficiency_F"].tolist() == pytest.approx([0.3, 0.3])
    assert table["efficiency_B"].tolist() == pytest.approx([0.15, 0.15])
    text = format_efficiency(table, peak, 0.6)
    assert "F 0.30, B 0.15" in text and "F+B 0.18" in text  # 3 / (1 / 0.3 + 2 / 0.15) = 0.18
    assert flops_per_row(profile) == pytest.approx(3 * 2 * (2 * 12 * 64 * 64 * 8 + 4 * 8 * 8 * 64))


def test_verify_runs_the_profiles_model_flags(tmp_path):
    doc = _transformer_doc(0.3, 1e10)
    config = _config(doc)
    plan = simulate_profiled((config, enumerate_profiled(config, [])[0]))
    assert isinstance(plan, Plan)
    args = profiled_executor_args(config, plan, tmp_path, steps=10)
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--model"] == "transformer" and pairs["--width"] == "64" and pairs["--seq-len"] == "8"
    assert pairs["--batch"] == "8" and pairs["--threads"] == "1" and pairs["--steps"] == "10"
    assert pairs["--schedule"] == plan.layout.schedule and pairs["--microbatches"] == "4"
    sleep = _document([_layout(1, 4)], {"model": "mlp", "layers": 4, "width": 8, "batch": 8, "compute": "sleep",
                                        "t_f": 0.002, "t_i": 0.001, "t_w": 0.001})
    args = profiled_executor_args(_config(sleep), plan, tmp_path, steps=10)
    assert dict(zip(args[::2], args[1::2]))["--t-f"] == "2.0"  # seconds in the profile, ms on the command line
    assert math.isnan(_config(sleep).flops_per_row)


@pytest.mark.mpi
def test_profile_then_plan_then_verify(tmp_path, capsys):
    """A tiny real profile at 2 ranks, the plan from it, and the best layout run for real."""
    from executor.launch import launch

    model = ["--model", "transformer", "--layers", "2", "--width", "32", "--heads", "2", "--seq-len", "8",
             "--batch", "4", "--threads", "1"]
    proc = launch(2, ["profile", *model, "--microbatches", "4", "--chunks", "1", "--repeats", "2",
                      "--out", str(tmp_path)], capture=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    costs = str(tmp_path / "costs.json")
    assert main(["--profile", costs, "--schedules", "1f1b,gpipe", "--workers", "1", "--quiet",
                 "--verify", "2", "--verify-steps", "2", "--verify-out", str(tmp_path / "verify")]) == 0
    out = capsys.readouterr().out
    assert "verify: 2 layout(s) run under the executor, 0 failed" in out
    assert "Spearman rank correlation of predicted and measured:" in out
    assert "predicted best is the measured best within 2%:" in out
    summary = json.loads((tmp_path / "verify" / "verify-0" / "summary.json").read_text())
    assert summary["measured_step_time"] > 0
    print(out, file=sys.stderr)
