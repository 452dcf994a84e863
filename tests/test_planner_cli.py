"""``python -m planner``: describe, outputs, overrides and one-line usage errors."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import schedules
from planner import MODELS
from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--top", "3", "--workers", "1", "--quiet"]


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_json_has_the_named_keys(capsys):
    code, out, _ = _run(["--model", "gpt3-175b", "--describe", "--json"], capsys)
    figures = json.loads(out)
    assert code == 0
    assert figures["params"] == MODELS["gpt3-175b"].params() and figures["layers"] == 96
    assert figures["flops_per_token"] == pytest.approx(6 * 175e9, rel=0.05)
    assert figures["activation_bytes_per_layer"] == 2048 * 12288 * (34 + 5 * 96 * 2048 / 12288)


def test_overrides_by_flag_and_json_file(tmp_path, capsys):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"model": {"layers": 48, "hidden": 8192, "heads": 64}}))
    _, out, _ = _run(["--describe", "--json", "--config", str(path), "--set", "model.layers=24"], capsys)
    figures = json.loads(out)
    assert (figures["layers"], figures["hidden"]) == (24, 8192)  # --set wins over the file


def test_config_file_overrides_gpu_and_links(tmp_path):
    from planner.cli import _parser, config_from_args

    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"model": {"layers": 48}, "inter_link": {"bandwidth": 5e10},
                                "gpu": {"peak_flops": 4e14}, "efficiency": 0.5, "memory_cap": "70GiB"}))
    config = config_from_args(_parser().parse_args(["--config", str(path), "--set", "intra_link.latency=1e-6"]))
    machine = config.machine
    assert config.model.layers == 48 and machine.inter.bandwidth == 5e10 and machine.intra.latency == 1e-6
    assert machine.flops == 4e14 * 0.5 and config.memory_cap == 70 * 2 ** 30


def test_plan_writes_json_csv_plot_and_schedule(tmp_path, capsys):
    out_csv, plot, sched = tmp_path / "plan.csv", tmp_path / "pareto.png", tmp_path / "best.csv"
    code, out, _ = _run(SMALL + ["--json", "--csv", str(out_csv), "--plot", str(plot),
                                 "--schedule-out", str(sched)], capsys)
    assert code == 0
    rows = json.loads(out)
    for key in ("schedule", "pp", "dp", "chunks", "microbatches", "microbatch_size", "step_time",
                "bubble_fraction", "peak_memory_bytes", "tokens_per_s", "mfu"):
        assert key in rows[0]
    assert [r["step_time"] for r in rows] == sorted(r["step_time"] for r in rows)
    with out_csv.open() as handle:
        assert [r["schedule"] for r in csv.DictReader(handle)] == [r["schedule"] for r in rows]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    best = schedules.load_csv(sched)
    assert (best.num_ranks, best.num_microbatches) == (rows[0]["pp"], rows[0]["microbatches"])
    schedules.validate(best)


def test_table_goes_to_stdout(capsys):
    code, out, _ = _run(SMALL, capsys)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["#", "schedule", "pp"]


def test_nothing_fits_says_why_and_exits_1(capsys):
    code, _, err = _run(["--model", "gpt3-175b", "--gpus", "8", "--global-batch", "16", "--workers", "1",
                         "--memory-cap", "80GiB"], capsys)
    assert code == 1
    assert "no layout fits" in err
    assert re.search(r"layout\(s\) over 80.0 GiB at (weights|gradients|optimizer); closest", err)


def test_nothing_to_try_says_which_combination_failed(capsys):
    code, _, err = _run(["--model", "llama3-8b", "--gpus", "64", "--global-batch", "3", "--schedules", "1f1b",
                         "--workers", "1", "--quiet"], capsys)
    assert code == 1 and "no layout to try (7 combinations skipped, e.g. pp=1 dp=64" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "unknown preset 'gpt5'"),
    (["--gpu", "tpu"], "unknown preset 'tpu'"),
    (["--memory-cap", "lots"], "expected a size"),
    (["--efficiency", "1.5"], "efficiency must be within"),
    (["--schedules", "1f1b,fast"], "unknown value 'fast'"),
    (["--recompute", "selective"], "unknown value 'selective'"),
    (["--gpus", "0"], "--gpus must be >= 1"),
    (["--set", "model.depth=3"], "model has no field 'depth'"),
    (["--set", "model.layers=0"], "layers must be a whole number"),
    (["--set", "nonsense"], "--set takes section.field=value"),
    (["--config", "/nonexistent.json"], "cannot read config"),
    (["--microbatch-size", "0"], "values must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    code, out, err = _run(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "planner", "--model", "gpt5"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("python -m planner: error:")
