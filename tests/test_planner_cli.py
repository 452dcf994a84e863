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
    costs = figures["costs"]
    for part in ("layer", "embedding", "head"):
        for phase in ("F", "I", "W"):
            t = costs[part][phase]
            assert t["seconds"] == pytest.approx(t["gemm_seconds"] + t["memory_seconds"] + t["comm_seconds"])
    layer = costs["layer"]
    assert layer["I"]["flops"] + layer["W"]["flops"] == pytest.approx(2 * layer["F"]["flops"])
    assert costs["embedding"]["I"]["seconds"] == 0.0


def test_describe_prints_f_i_w_per_layer_and_stage_end_at_the_first_pinned_values(capsys):
    code, out, _ = _run(["--describe", "--tp", "8", "--recompute", "selective", "--sequence-parallel", "on"], capsys)
    assert code == 0 and "tp 8, sequence parallel on, recompute selective" in out
    rows = {line.split()[0]: line for line in out.splitlines()[-3:]}
    assert set(rows) == {"layer", "embedding", "head"}
    figures = json.loads(_run(["--describe", "--json", "--tp", "8"], capsys)[1])
    assert figures["costs"]["layer"]["F"]["comm_seconds"] > 0  # tensor-parallel collectives
    assert figures["activation_bytes_per_layer_per_gpu"] < figures["activation_bytes_per_layer"] / 8 * 34 / 20


def test_overrides_by_flag_and_json_file(tmp_path, capsys):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"model": {"layers": 48, "hidden": 8192, "heads": 64}}))
    _, out, _ = _run(["--describe", "--json", "--config", str(path), "--set", "model.layers=24"], capsys)
    figures = json.loads(out)
    assert (figures["layers"], figures["hidden"]) == (24, 8192)  # --set wins over the file


def test_config_file_overrides_gpu_and_links(tmp_path):
    from planner.args import config_from_args, parser as _parser

    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"model": {"layers": 48}, "inter_link": {"bandwidth": 5e10},
                                "gpu": {"peak_flops": 4e14}, "efficiency": 0.5, "memory_cap": "70GiB"}))
    config = config_from_args(_parser().parse_args(["--config", str(path), "--set", "intra_link.latency=1e-6"]))
    machine = config.machine
    assert config.model.layers == 48 and machine.inter.bandwidth == 5e10 and machine.intra.latency == 1e-6
    assert machine.gpu.gemm_flops == 4e14 * 0.5 and config.memory_cap == 70 * 2 ** 30
    hbm = config_from_args(_parser().parse_args(["--set", "gpu.hbm_efficiency=0.5", "--efficiency", "0.7"]))
    assert (hbm.machine.gpu.hbm_efficiency, hbm.machine.gpu.gemm_efficiency) == (0.5, 0.7)


def test_plan_writes_json_csv_plot_and_schedule(tmp_path, capsys):
    out_csv, plot, sched = tmp_path / "plan.csv", tmp_path / "pareto.png", tmp_path / "best.csv"
    code, out, _ = _run(SMALL + ["--json", "--csv", str(out_csv), "--plot", str(plot),
                                 "--schedule-out", str(sched)], capsys)
    assert code == 0
    rows = json.loads(out)
    for key in ("tp", "pp", "dp", "schedule", "chunks", "microbatches", "step_time", "peak_memory_bytes",
                "tflops_per_gpu", "mfu", "samples_per_gpu_per_s", "microbatch_size", "bubble_fraction",
                "tokens_per_s", "recompute", "sequence_parallel", "distributed_optimizer"):
        assert key in rows[0]
    assert all(r["tp"] * r["pp"] * r["dp"] == 8 for r in rows)
    assert [r["step_time"] for r in rows] == sorted(r["step_time"] for r in rows)
    with out_csv.open() as handle:
        assert [r["schedule"] for r in csv.DictReader(handle)] == [r["schedule"] for r in rows]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    best = schedules.load_csv(sched)
    assert (best.num_ranks, best.num_microbatches) == (rows[0]["pp"], rows[0]["microbatches"])
    schedules.validate(best)


def test_table_goes_to_stdout(capsys):
    code, out, _ = _run(SMALL, capsys)
    header = out.splitlines()[0].split()
    assert code == 0 and header[:4] == ["#", "schedule", "tp", "pp"] and header[-3:] == ["smp/GPU/s", "TFLOP/s", "MFU"]


def test_pins_and_an_explicit_split(capsys):
    code, out, _ = _run(SMALL + ["--json", "--tp", "2", "--pp", "2,4", "--split", "8,8,8,8", "--schedules", "1f1b,zbv",
                                 "--recompute", "full"], capsys)
    rows = json.loads(out)
    assert code == 0 and {(r["tp"], r["pp"], r["dp"]) for r in rows} <= {(2, 2, 2), (2, 4, 1)}
    assert {r["split"] for r in rows} == {"8,8,8,8"} and {r["schedule"] for r in rows} == {"1f1b", "zbv"}
    assert {(r["pp"], r["chunks"]) for r in rows} <= {(4, 1), (2, 2)}  # 4 stages either way


def test_zero_bubble_schedules_at_memory_limits_are_planner_schedules(capsys):
    code, out, _ = _run(SMALL + ["--json", "--schedules", "zb-1p,zb-2p", "--tp", "2", "--pp", "4"], capsys)
    rows = json.loads(out)
    assert code == 0 and {r["schedule"] for r in rows} == {"zb-1p", "zb-2p"}


def test_distributed_optimizer_flag_alone_turns_it_on(capsys):
    code, out, _ = _run(SMALL + ["--json", "--distributed-optimizer", "--tp", "2", "--pp", "2"], capsys)
    rows = json.loads(out)
    assert code == 0 and all(r["distributed_optimizer"] for r in rows)  # dp = 2 everywhere


def test_emit_megatron_and_torchtitan(capsys):
    code, out, _ = _run(SMALL + ["--tp", "4", "--pp", "2", "--schedules", "interleaved-1f1b", "--chunks", "2",
                                 "--split", "uniform", "--recompute", "selective", "--sequence-parallel", "on",
                                 "--emit", "megatron"], capsys)
    assert code == 0 and out.startswith("# world size 8: tp 4 x pp 2 x dp 1")
    for arg in ("--tensor-model-parallel-size 4", "--pipeline-model-parallel-size 2",
                "--num-layers-per-virtual-pipeline-stage 8", "--micro-batch-size 1", "--global-batch-size 64",
                "--recompute-granularity selective", "--sequence-parallel", "--num-query-groups 8", "--swiglu",
                "--normalization RMSNorm", "--disable-bias-linear", "--untie-embeddings-and-output-weights"):
        assert arg in out
    assert "--use-distributed-optimizer" not in out
    code, out, _ = _run(SMALL + ["--tp", "4", "--pp", "2", "--schedules", "interleaved-1f1b", "--chunks", "2",
                                 "--split", "uniform", "--recompute", "full", "--emit", "torchtitan"], capsys)
    assert code == 0
    for line in ("[parallelism]", "tensor_parallel_degree = 4", "pipeline_parallel_degree = 2",
                 'pipeline_parallel_schedule = "Interleaved1F1B"', "pipeline_parallel_microbatch_size = 1",
                 "pipeline_parallel_layers_per_stage = 8", "local_batch_size = 64", "seq_len = 8192",
                 "[activation_checkpoint]", 'mode = "full"'):
        assert line in out
    code, out, _ = _run(SMALL + ["--schedules", "zb-2p", "--tp", "2", "--pp", "4", "--emit", "megatron"], capsys)
    assert code == 0 and "--zero-bubble-max-pending-backward 8" in out  # the zero-bubble fork's knob, as a note


@pytest.mark.parametrize("config, expected", [
    ({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": 50257,
      "n_inner": None}, dict(layers=12, hidden=768, heads=12, seq=1024, f=3072, mlp="gelu", bias=True)),
    ({"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
      "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 8192, "vocab_size": 128256},
     dict(layers=32, hidden=4096, heads=32, kv=8, seq=8192, f=14336, mlp="swiglu", bias=False)),
    ({"model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
      "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 32768, "vocab_size": 32000,
      "sliding_window": 4096}, dict(layers=32, kv=8, seq=32768, f=14336, norm="rmsnorm", learned_positions=False)),
])
def test_a_hugging_face_config_is_a_model(tmp_path, config, expected):
    from planner.hf import load_hf_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    spec = load_hf_config(str(path))
    for field, value in expected.items():
        assert getattr(spec, field) == value, field
    llama = {**config, "tie_word_embeddings": False} if config["model_type"] == "llama" else None
    if llama:  # the Llama 3 8B preset is this very config
        assert load_hf_config(str(path)).params() == MODELS["llama3-8b"].params()


def test_a_hugging_face_config_plans(tmp_path, capsys):
    path = tmp_path / "gpt2" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
                                "n_positions": 1024, "vocab_size": 50257}))
    code, out, _ = _run(["--model", str(path), "--gpus", "8", "--global-batch", "64", "--top", "2", "--workers", "1",
                         "--quiet", "--json", "--tp", "1"], capsys)
    assert code == 0 and json.loads(out)[0]["tp"] == 1


def test_nothing_fits_says_why_and_exits_1(capsys):
    code, _, err = _run(["--model", "gpt3-175b", "--gpus", "8", "--global-batch", "16", "--workers", "1",
                         "--memory-cap", "80GiB"], capsys)
    assert code == 1
    assert "no layout fits" in err
    assert re.search(r"layout\(s\) over 80.0 GiB at (weights|gradients|optimizer); closest", err)


def test_nothing_to_try_says_which_combination_failed(capsys):
    code, _, err = _run(["--model", "llama3-8b", "--gpus", "64", "--global-batch", "3", "--schedules", "1f1b",
                         "--tp", "1", "--workers", "1", "--quiet"], capsys)
    assert code == 1 and "no layout to try (" in err and "tp=1 pp=1 dp=64 b=1: global batch 3" in err


def test_outputs_are_claimed_before_work_and_replaced_only_with_force(tmp_path, capsys):
    csv_path = tmp_path / "plan.csv"
    csv_path.write_text("keep me")
    code, out, err = _run(SMALL + ["--csv", str(csv_path)], capsys)
    assert code == 2 and out == "" and "exists; pass --force" in err and csv_path.read_text() == "keep me"
    assert _run(SMALL + ["--csv", str(csv_path), "--force"], capsys)[0] == 0
    assert csv_path.read_text().startswith("schedule,tp,pp")


def test_workers_are_capped_at_the_cores(capsys):
    code, _, err = _run([*SMALL[:-3], "--workers", "100000", "--quiet", "--tp", "8"], capsys)
    assert code == 0 and "--workers 100000 capped at the" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "unknown preset 'gpt5'"),
    (["--gpu", "tpu"], "unknown preset 'tpu'"),
    (["--memory-cap", "lots"], "expected a size"),
    (["--efficiency", "1.5"], "gemm_efficiency must be a number within (0, 1]"),
    (["--schedules", "1f1b,fast"], "unknown value 'fast'"),
    (["--recompute", "partial"], "unknown value 'partial'"),
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
