"""Bad input to ``python -m planner``: one line on stderr, the exit code the contract names,
and no waiting for an answer that cannot come (issue #18's planner items).

Each row: the arguments (``{tmp}`` is a fresh folder, ``{costs}`` a profile, ``{hf}`` a
config.json, both written by the row's setup), the exit code, a phrase of the one line,
and the seconds it may take.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from planner.cli import main
from test_planner_profile import _document, _layout

SMALL = ["--model", "llama3-8b", "--gpus", "8", "--global-batch", "64", "--top", "2", "--workers", "1", "--quiet"]
VERIFY = ["--model", "executor-transformer", "--gpu", "this-cpu", "--gpus", "2", "--gpus-per-node", "2",
          "--global-batch", "4", "--recompute", "none", "--workers", "1", "--quiet", "--verify", "1"]


def _profile(model: dict):
    def write(tmp: Path) -> None:
        (tmp / "costs.json").write_text(json.dumps(_document([_layout(1, 4)], model)))
    return write


def _hf(config: dict):
    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config))
    return write


def _file(name: str, text: str = "keep"):
    def write(tmp: Path) -> None:
        (tmp / name).write_text(text)
    return write


def _nonempty_folder(tmp: Path) -> None:
    (tmp / "verify").mkdir()
    (tmp / "verify" / "old.txt").write_text("keep")


TRANSFORMER = {"model": "transformer", "layers": 2, "width": 64, "heads": 4, "seq_len": 8, "batch": 8}
LLAMA_HF = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 512,
            "max_position_embeddings": 512, "vocab_size": 1000}

CASES = [
    # sizes no layout can use, refused before any search
    ("impossible-size", ["--gpus", "1000000000", "--global-batch", "64"], None, 2, "can each hold part of a sequence", 1),
    ("pp-divides-nothing", ["--pp", "7"], None, 2, "--pp 7: none divides --gpus 1024", 1),
    ("dp-divides-nothing", ["--dp", "3"], None, 2, "--dp 3: must divide", 1),
    ("tp-not-in-a-node", ["--tp", "16"], None, 2, "--tp 16: tensor parallelism stays in a node", 1),
    ("tp-splits-no-heads", ["--model", "llama3-8b", "--gpus", "96", "--tp", "3", "--gpus-per-node", "6"], None, 2,
     "--tp 3: 32 heads / 8 KV heads are not divisible by 3", 1),
    # contradictory flags
    ("chunks-against-schedule", ["--chunks", "3", "--schedules", "1f1b"], None, 2, "1f1b takes chunks 1", 1),
    ("split-wrong-sum", ["--split", "2,3"], None, 2, "5 layers given for a model of 96", 1),
    ("split-not-numbers", ["--split", "2,x"], None, 2, "layers per stage such as 2,3,3,2, got '2,x'", 1),
    ("emit-with-json", ["--emit", "megatron", "--json"], None, 2, "drop --json", 1),
    ("recompute-unknown", ["--recompute", "partial"], None, 2, "unknown value 'partial'", 1),
    ("sp-unknown", ["--sequence-parallel", "maybe"], None, 2, "invalid choice: 'maybe'", 1),
    ("zero-unknown", ["--distributed-optimizer", "maybe"], None, 2, "invalid choice: 'maybe'", 1),
    ("emit-unknown", ["--emit", "deepspeed"], None, 2, "invalid choice: 'deepspeed'", 1),
    # Hugging Face configs
    ("hf-missing-file", ["--model", "{tmp}/none/config.json"], None, 2, "cannot read --model", 1),
    ("hf-missing-field", ["--model", "{tmp}/config.json"], _hf(LLAMA_HF), 2, "field 'num_attention_heads' is missing", 1),
    ("hf-bad-value", ["--model", "{tmp}/config.json"], _hf({**LLAMA_HF, "num_attention_heads": "four"}), 2,
     "field 'num_attention_heads' must be a whole number >= 1, got 'four'", 1),
    ("hf-unknown-family", ["--model", "{tmp}/config.json"], _hf({"model_type": "t5"}), 2, "model_type 't5'", 1),
    # outputs: claimed before any work, replaced only with --force
    ("csv-exists", SMALL + ["--csv", "{tmp}/plan.csv"], _file("plan.csv"), 2, "exists; pass --force", 1),
    ("plot-exists", SMALL + ["--plot", "{tmp}/p.png"], _file("p.png"), 2, "exists; pass --force", 1),
    ("schedule-out-exists", SMALL + ["--schedule-out", "{tmp}/s.csv"], _file("s.csv"), 2, "exists; pass --force", 1),
    ("csv-is-a-folder", SMALL + ["--csv", "{tmp}"], None, 2, "is a folder", 1),
    ("csv-unwritable", SMALL + ["--csv", "/proc/pipebubble/plan.csv"], None, 2, "cannot", 1),
    ("verify-out-not-empty", VERIFY + ["--verify-out", "{tmp}/verify"], _nonempty_folder, 2, "is not empty", 5),
    # profiles whose model the planner cannot read
    ("profile-no-layers", ["--profile", "{tmp}/costs.json"], _profile({k: v for k, v in TRANSFORMER.items()
                                                                     if k != "layers"}),
     2, "costs.json: conditions.model.layers is missing", 1),
    ("profile-non-number", ["--profile", "{tmp}/costs.json"], _profile({**TRANSFORMER, "width": "wide"}), 2,
     "costs.json: conditions.model.width must be a whole number >= 1, got 'wide'", 1),
    ("profile-zero-layers", ["--profile", "{tmp}/costs.json"], _profile({**TRANSFORMER, "layers": 0}), 2,
     "conditions.model.layers must be a whole number >= 1, got 0", 1),
    ("profile-with-tp", ["--profile", "{tmp}/costs.json", "--tp", "2"], _profile(TRANSFORMER), 2,
     "--tp sets the FLOPs model", 1),
]


@pytest.mark.parametrize("name, args, setup, code, phrase, seconds", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code_in_bounded_time(name, args, setup, code, phrase, seconds,
                                                                  tmp_path, capsys):
    if setup:
        setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    began = time.perf_counter()
    got = main(argv)
    elapsed = time.perf_counter() - began
    out, err = capsys.readouterr()
    assert got == code, err
    assert out == "" and err.count("\n") == 1 and err.startswith("python -m planner: error: "), err
    assert phrase in err and "Traceback" not in err
    assert elapsed <= seconds, f"{name} took {elapsed:.1f} s"
    for path in tmp_path.iterdir():  # nothing replaced
        if path.is_file() and path.name not in ("costs.json", "config.json"):
            assert path.read_text() == "keep"


def test_too_many_workers_are_capped_with_a_note(capsys):
    began = time.perf_counter()
    code = main([*SMALL[:-3], "--workers", "100000", "--quiet", "--tp", "8"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("\n") == 1 and "--workers 100000 capped at the" in err
    assert time.perf_counter() - began < 60
