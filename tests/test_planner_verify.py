"""--verify: the executor runs the planner's layouts; predicted and measured rankings side by side."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from planner import MODELS, LINKS, Layout, Machine, PlanConfig
from planner.cli import main
from planner.hardware import GIB
from planner.search import simulate_layout
from planner.verify import best_holds, check_runnable, executor_args, format_verify, rank_table, spearman, this_cpu

SPEC = MODELS["executor-transformer"]
VERIFY = ["--model", "executor-transformer", "--gpu", "this-cpu", "--gpus", "2", "--gpus-per-node", "2",
          "--global-batch", "4", "--recompute", "none", "--workers", "1", "--quiet"]


def test_the_executor_preset_is_runnable_and_others_are_refused():
    check_runnable(SPEC, 2)
    with pytest.raises(ValueError, match="executor-transformer"):
        check_runnable(MODELS["gpt3-175b"], 2)
    with pytest.raises(ValueError, match="--gpus must be <= 4"):
        check_runnable(SPEC, 8)
    # its layers are GPT layers: nn.TransformerEncoderLayer(h, a, 4h) has 12 h^2 + 13 h parameters
    import torch

    layer = torch.nn.TransformerEncoderLayer(SPEC.hidden, SPEC.heads, 4 * SPEC.hidden)
    assert sum(p.numel() for p in layer.parameters()) == SPEC.layer_params()


def test_executor_arguments_carry_the_layout(tmp_path):
    cpu = this_cpu()
    assert cpu.peak_flops > 1e8
    machine = Machine(cpu, 2, 2, LINKS["shared-memory"], LINKS["shared-memory"])
    config = PlanConfig(SPEC, machine, 8, 64 * GIB)
    plan = simulate_layout((config, Layout("zbv", 2, 1, 2, 8, 1, "uniform", "none"), 0.0))
    args = executor_args(config, plan, tmp_path, steps=2)
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--schedule"] == "zbv" and pairs["--chunks"] == "2" and pairs["--dp"] == "1"
    assert pairs["--balance"] == "1,1,1,1" and pairs["--batch"] == "8" and pairs["--width"] == str(SPEC.hidden)


def test_rank_correlation_is_spearman():
    table = rank_table([{"layout": x, "predicted_s": p, "measured_s": m, "efficiency": e, "failure": None}
                        for x, p, m, e in zip("abc", [1.0, 2.0, 3.0], [1.5, 1.2, 4.0], [0.5, 0.4, 0.6])])
    assert list(table["measured_rank"]) == [2, 1, 3]
    text = format_verify(table, 0.6)
    assert "Spearman rank correlation of predicted and measured: 0.50" in text  # 1 - 6 * 2 / (3 * 8)
    assert "predicted best is the measured best within 2%: no (+25.0% against the fastest measured)" in text
    assert "0.50, against the 0.60 assumed" in text


def test_a_failed_run_is_listed_and_left_out_of_the_ranking():
    rows = [{"layout": "a", "predicted_s": 1.0, "measured_s": float("nan"), "failure": "exit 3: executor: stuck"},
            {"layout": "b", "predicted_s": 2.0, "measured_s": 2.5, "failure": None},
            {"layout": "c", "predicted_s": 3.0, "measured_s": 2.51, "failure": None},
            {"layout": "d", "predicted_s": 4.0, "measured_s": 2.0, "failure": None}]
    table = rank_table(rows)
    assert list(table["predicted_rank"].iloc[1:]) == [1, 2, 3] and pd.isna(table["predicted_rank"].iloc[0])
    assert spearman(table) == pytest.approx(-0.5)  # ranks (1,2,3) against (2,3,1): 1 - 6 * 6 / 24
    assert not best_holds(table) and best_holds(rank_table(rows[:3]))  # 2.5 within 2 % of 2.5, not of 2.0
    text = format_verify(table)
    assert "4 layout(s) run under the executor, 1 failed" in text and "a: exit 3: executor: stuck" in text
    assert "efficiency" not in text  # costs from a profile: no FLOPs model to rate


@pytest.mark.parametrize("extra, message", [
    (["--model", "gpt3-175b"], "executor-transformer"),
    (["--verify", "0"], "--verify must be >= 1"),
])
def test_verify_refuses_what_it_cannot_run(extra, message, capsys):
    args = VERIFY + ["--verify", "1"] + extra
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.mpi
def test_verify_runs_the_best_layout_under_the_executor(tmp_path, capsys):
    assert main(VERIFY + ["--top", "2", "--verify", "1", "--verify-out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verify: 1 layout(s) run under the executor" in out
    assert (Path(tmp_path) / "verify-0" / "summary.json").exists()


def test_only_layouts_the_executor_runs_as_planned_are_verified():
    from planner.verify import executor_runs

    base = Layout("1f1b", 2, 1, 1, 4, 1, "uniform", "none")
    assert executor_runs(base)
    for other in (dict(tp=2), dict(recompute="selective"), dict(schedule="zb-1p"), dict(distributed_optimizer=True)):
        assert not executor_runs(dataclasses.replace(base, **other)), other
