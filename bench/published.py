"""The planner against published GPU measurements: predicted beside published, row by row.

    python bench/published.py [--workers 2] [--table megatron,zero-bubble,korthikanti,profile]

Megatron-LM, Table 1 of Narayanan et al., "Efficient Large-Scale Language Model Training on
GPU Clusters Using Megatron-LM", SC'21 (arXiv 2104.04473): GPT models on A100-80GB (DGX
A100 nodes: 8 GPUs on NVLink, 8 HDR InfiniBand NICs), sequence 2048, vocabulary 51,200,
full activation recomputation, mixed precision; the figure is achieved teraFLOP/s per GPU
by their count (eq. 3, recomputation included). The paper does not give each row's
microbatch size or schedule, so the prediction is the planner's best over 1F1B and
interleaved 1F1B at the row's tp / pp / dp, microbatch sizes 1, 2, 4, 8, among what
Megatron-LM could run in 2021: layers split evenly (L divisible by pp x chunks),
interleaving only with m divisible by pp, no sequence parallelism and no distributed
optimizer (both came later), and point-to-point transfers that block the ranks that post
them until they complete (``comm="blocking"``: Megatron-LM's batched isend/irecv and wait).

The zero-bubble paper, Table 4 of Qi et al., "Zero Bubble (Almost) Pipeline Parallelism",
ICLR 2024 (arXiv 2401.10241): pure pipeline parallelism on 8 A100-80GB (p = 8, one node),
sequence 1024, no recomputation; samples per GPU per second at m = 24, 32, 64. 1.5B: 22
layers, h 2304, 24 heads, microbatch 6; 6.2B: 30 layers, h 4096, 32 heads, microbatch 3.
Every row is the paper's own layout, evaluated as given (no search), as the authors' fork
(sail-sg/zero-bubble-pipeline-parallelism) runs it:
  * vocabulary: its scripts train with a 32k SentencePiece tokenizer (``--vocab-size
    32004``), which Megatron-LM pads to 32,128;
  * layers: ``--allow-padding-num-layers`` pads 22 (30) layers to 24 (32) and takes the two
    padding layers from the first and the last model stage: 2,3,3,3,3,3,3,2 (3,4,...,4,3);
  * interleaved 1F1B: ``--num-layers-per-virtual-pipeline-stage 1`` (its
    examples/pretrain_zero_bubble.sh), so v = 3 (1.5B) and v = 4 (6.2B) chunks of one layer,
    the padding again the first and the last (its ``get_offset``): the first chunk of rank 0
    holds the embedding alone and the last chunk of rank 7 the head alone (split 0,1,...,1,0);
  * transfers: 1F1B and interleaved 1F1B run Megatron-LM's own schedules, whose
    point-to-point calls wait for their transfers (``comm="blocking"``); ZB-1p and ZB-2p run
    the fork's runtime, which posts batched isend/irecv ahead and waits just before the
    consumer (``comm="async"``);
  * the link between stages is the paper's own measurement of a boundary transfer on its
    node, Table 9's T_comm: 0.60-0.76 ms for the 1.5B's 28.3 MB and 0.53-0.58 ms for the
    6.2B's 25.2 MB, about 47 GB/s (``ZB_P2P``; NCCL's all-reduce bus bandwidth, the planner's
    ``nvlink`` default, is 200).
ZB-1p and ZB-2p are synthesized by the planner (:mod:`planner.synthesized`: the mean stage
costs, a limit of p and 2p stage-microbatches); the fork plans with the median stage's
costs and a limit in bytes, p (2p) times stage 1's activations of one microbatch.

A third table, not in issue #17's targets, checks what the two do not: sequence
parallelism and selective recomputation, and layouts given in full. Korthikanti et al.,
"Reducing Activation Recomputation in Large Transformer Models", MLSys'23 (arXiv
2205.05198), Table 5: seconds per iteration of the 22B, 175B, 530B and 1T GPT models on
A100-80GB, with full recomputation and with sequence parallelism + selective
recomputation. The figures and each run's layout (tp 8; pp 1, 8, 35, 64; batch 4, 64, 280,
512; microbatch 4 for 22B, else 1; interleaving 3 for 175B and 530B) as Calculon (Isaev et al.
SC'23) lists them to validate against (calculon-ai/calculon, calculon/megatron/validation.py
and validation/*.json). Their memory is checked too: Megatron ran these layouts, so the
planner must not find them over 80 GiB.

A fourth, ``profile``, is no validation row but the evidence of where time goes: the
zero-bubble paper's per-stage profile (Table 9, at each model's smallest m: T_F, T_B (our I)
and T_W of the stage its scheduler plans with, the median one, a middle stage of 3, 4, 3 and
2 layers for 1.5B, 6.2B, 14.6B and 28.3B; the last two at p = 16 and 32, b = 1), per layer,
beside the planner's F, I and W of one layer. Its rows are counted apart.

Every published figure is typed in below from the papers; nothing is fitted to them: the
GPU's three efficiencies come from the sources named in :mod:`planner.hardware`. The bench
prints each row, the median and largest |error| over both tables, and each schedule's
throughput relative to 1F1B at the same setting against the paper's ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from planner import GPUS, LINKS, Layout, Link, Machine, PlanConfig, TransformerSpec, plan  # noqa: E402
from planner.hardware import GIB  # noqa: E402
from planner.ops import layer_times  # noqa: E402
from planner.search import evaluate, simulate_layout  # noqa: E402
from simulator.workers import open_workers  # noqa: E402


class MegatronRow(NamedTuple):
    params: str
    layers: int
    hidden: int
    heads: int
    tp: int
    pp: int
    gpus: int
    batch: int
    tflops: float


MEGATRON = [  # Narayanan et al. SC'21, Table 1
    MegatronRow("1.7B", 24, 2304, 24, 1, 1, 32, 512, 137),
    MegatronRow("3.6B", 30, 3072, 32, 2, 1, 64, 512, 138),
    MegatronRow("7.5B", 36, 4096, 32, 4, 1, 128, 512, 142),
    MegatronRow("18.4B", 40, 6144, 48, 8, 1, 256, 1024, 135),
    MegatronRow("39.1B", 48, 8192, 64, 8, 2, 512, 1536, 138),
    MegatronRow("76.1B", 60, 10240, 80, 8, 4, 1024, 1792, 140),
    MegatronRow("145.6B", 80, 12288, 96, 8, 8, 1536, 2304, 148),
    MegatronRow("310.1B", 96, 16384, 128, 8, 16, 1920, 2160, 155),
    MegatronRow("529.6B", 105, 20480, 128, 8, 35, 2520, 2520, 163),
    MegatronRow("1008.0B", 128, 25600, 160, 8, 64, 3072, 3072, 163),
]

ZB_MODELS = {  # Qi et al. ICLR'24 (as issue #17 gives them): layers, hidden, heads, microbatch size, split
    "1.5B": (22, 2304, 24, 6, "2,3,3,3,3,3,3,2"),
    "6.2B": (30, 4096, 32, 3, "3,4,4,4,4,4,4,3"),
}
ZB_P = 8
ZB_COMM = {"1f1b": "blocking", "interleaved-1f1b": "blocking", "zb-1p": "async", "zb-2p": "async"}
ZB_P2P = Link("zb-p2p", 47e9, 0.0, "Qi et al. ICLR'24, Table 9, T_comm: 28.3 MB in 0.601 ms (1.5B, m = 24), "
                                   "25.2 MB in 0.527 ms (6.2B, m = 24)")
ZB_M = (24, 32, 64)
ZB = {  # Qi et al. ICLR'24, Table 4: samples per GPU per second at m = 24, 32, 64
    ("1.5B", "1f1b"): (11.8, 12.5, 13.6), ("1.5B", "interleaved-1f1b"): (13.1, 13.4, 13.9),
    ("1.5B", "zb-1p"): (12.9, 13.4, 14.2), ("1.5B", "zb-2p"): (14.5, 14.8, 14.9),
    ("6.2B", "1f1b"): (3.50, 3.70, 4.03), ("6.2B", "interleaved-1f1b"): (4.01, 4.08, 4.19),
    ("6.2B", "zb-1p"): (3.88, 4.00, 4.20), ("6.2B", "zb-2p"): (4.32, 4.35, 4.39),
}
ZB_VOCAB = 32004

ZB_PROFILE = {  # Qi et al. ICLR'24, Tables 3 and 9 (smallest m): layers, hidden, heads, b, p; T_F, T_B, T_W (ms)
    "1.5B": ((22, 2304, 24, 6, 8), (18.522, 18.086, 9.337)),
    "6.2B": ((30, 4096, 32, 3, 8), (29.718, 29.444, 19.927)),
    "14.6B": ((46, 5120, 40, 1, 16), (11.347, 11.248, 8.132)),
    "28.3B": ((62, 6144, 48, 1, 32), (10.419, 10.207, 7.715)),
}

KORTHIKANTI = {  # name: (layers, hidden, heads, GPUs, pp, batch, microbatch, interleaving, s/iteration full, seq+sel)
    "22B": (48, 6144, 64, 8, 1, 4, 4, 1, 1.42, 1.10),
    "175B": (96, 12288, 96, 64, 8, 64, 1, 3, 18.13, 13.75),
    "530B": (105, 20480, 128, 280, 35, 280, 1, 3, 49.05, 37.83),
    "1T": (128, 25600, 160, 512, 64, 512, 1, 1, 94.42, 71.49),
}


def _machine(gpus: int) -> Machine:
    return Machine(GPUS["a100-80gb"], gpus, 8, LINKS["nvlink"], LINKS["infiniband"])


def _megatron_runnable(layout, layers: int) -> bool:
    if layers % layout.stages:
        return False
    return layout.schedule == "1f1b" or layout.microbatches % layout.pp == 0


def megatron(workers) -> list[dict]:
    rows = []
    for row in MEGATRON:
        spec = TransformerSpec(f"gpt-{row.params}", layers=row.layers, hidden=row.hidden, heads=row.heads, seq=2048,
                               vocab=51200, source="Narayanan et al. SC'21, Table 1")
        per_rank = row.layers // row.pp if row.layers % row.pp == 0 else 0
        chunks = tuple(v for v in range(1, 17) if per_rank and per_rank % v == 0) or (1,)
        config = PlanConfig(spec, _machine(row.gpus), row.batch, 80 * GIB, microbatch_sizes=(1, 2, 4, 8),
                            schedule_names=("1f1b", "interleaved-1f1b"), chunks=chunks, splits=("uniform",),
                            recompute=("full",), tp=(row.tp,), pp=(row.pp,), sequence_parallel=(False,),
                            distributed_optimizer=(False,), top=40, comm="blocking")
        began = time.perf_counter()
        found = plan(config, workers)
        ran = [p for p in found.plans if _megatron_runnable(p.layout, row.layers)]
        best = ran[0] if ran else None
        smallest = [c for c in found.candidates if c.layout.microbatch_size == 1 and _megatron_runnable(c.layout, row.layers)]
        rows.append({"table": "megatron", "row": f"{row.params} tp{row.tp} pp{row.pp} dp{row.gpus // (row.tp * row.pp)}",
                     "unit": "TFLOP/s/GPU", "published": row.tflops,
                     "predicted": best.tflops_per_gpu if best else float("nan"),
                     "layout": best.layout.label() if best else "nothing fits",
                     "peak_gib": best.memory.total / GIB if best else float("nan"),
                     "rejected": sum(c.overflow is not None for c in smallest), "checked": len(smallest),
                     "seconds": time.perf_counter() - began})
    return rows


def _zb_layout(name: str, schedule: str, m: int) -> Layout:
    """The paper's layout of one row (see the module docstring)."""
    layers, _, _, b, split = ZB_MODELS[name]
    v = 1
    if schedule == "interleaved-1f1b":  # one layer per virtual stage, layers padded by two
        v = -(-layers // ZB_P)
        assert ZB_P * v == layers + 2
        split = ",".join(["0"] + ["1"] * layers + ["0"])
    return Layout(schedule, ZB_P, 1, v, m, b, split, "none", 1)


def zero_bubble(workers) -> list[dict]:
    machine = Machine(GPUS["a100-80gb"], ZB_P, 8, ZB_P2P, LINKS["infiniband"])
    jobs, rows = [], []
    for (name, schedule), published in ZB.items():
        layers, hidden, heads, b, _ = ZB_MODELS[name]
        spec = TransformerSpec(f"zb-{name}", layers=layers, hidden=hidden, heads=heads, seq=1024, vocab=ZB_VOCAB,
                               source="Qi et al. ICLR'24, as issue #17 gives it")
        for m, figure in zip(ZB_M, published):
            layout = _zb_layout(name, schedule, m)
            config = PlanConfig(spec, machine, m * b, 80 * GIB, microbatch_sizes=(b,), schedule_names=(schedule,),
                                chunks=(layout.chunks,), splits=(layout.split,), recompute=("none",), tp=(1,),
                                pp=(ZB_P,), sequence_parallel=(False,), top=1, comm=ZB_COMM[schedule])
            jobs.append((config, layout, evaluate(config, layout).estimate))
            rows.append({"table": "zero-bubble", "row": f"{name} {schedule} m={m}", "unit": "samples/GPU/s",
                         "published": figure})
    for row, (config, layout, _), found in zip(rows, jobs, workers.map(simulate_layout, jobs)):
        counts = layout.split.split(",")
        short = f"0,1x{len(counts) - 2},0" if layout.chunks > 1 else layout.split  # the padded interleaving
        row.update(predicted=found.samples_per_gpu_per_s, peak_gib=found.memory.total / GIB,
                   layout=f"{layout.label().replace(layout.split, short)} comm={config.comm}")
    return rows


def korthikanti(workers) -> list[dict]:
    rows = []
    for name, (layers, hidden, heads, gpus, pp, batch, b, v, full, seqsel) in KORTHIKANTI.items():
        spec = TransformerSpec(f"gpt-{name}", layers=layers, hidden=hidden, heads=heads, seq=2048, vocab=51200,
                               source="Korthikanti et al. MLSys'23, Table 5")
        for mode, seconds in (("full", full), ("sp+selective", seqsel)):
            recompute, sp = ("full", False) if mode == "full" else ("selective", True)
            config = PlanConfig(spec, _machine(gpus), batch, 80 * GIB, microbatch_sizes=(b,),
                                schedule_names=("interleaved-1f1b" if v > 1 else "1f1b",), chunks=(v,),
                                splits=("uniform",), recompute=(recompute,), tp=(8,), pp=(pp,),
                                sequence_parallel=(sp,), top=1, comm="blocking")
            began = time.perf_counter()
            found = plan(config, workers)
            best = found.plans[0] if found.plans else None
            rows.append({"table": "korthikanti", "row": f"{name} {mode} tp8 pp{pp} v{v}", "unit": "iterations/s",
                         "published": 1 / seconds, "predicted": 1 / best.step_time if best else float("nan"),
                         "layout": best.layout.label() if best else "over 80 GiB: " + found.candidates[0].overflow,
                         "peak_gib": (best.memory.total if best else found.candidates[0].memory.total) / GIB,
                         "rejected": int(best is None), "checked": 1, "seconds": time.perf_counter() - began})
    return rows


def profile(workers) -> list[dict]:
    """One layer's F, I, W against the zero-bubble paper's profile of a stage over its layers."""
    rows = []
    for name, ((layers, hidden, heads, b, p), measured) in ZB_PROFILE.items():
        per_stage = -(-layers // p)  # a middle stage of the padded split
        spec = TransformerSpec(f"zb-{name}", layers=layers, hidden=hidden, heads=heads, seq=1024, vocab=ZB_VOCAB,
                               microbatch_size=b, source="Qi et al. ICLR'24, Table 3")
        t = layer_times(spec, GPUS["a100-80gb"], LINKS["nvlink"])
        for phase, predicted, stage in zip("FIW", (t.f, t.i, t.w), measured):
            rows.append({"table": "profile", "row": f"{name} {phase} a layer (stage / {per_stage})", "unit": "ms",
                         "published": stage / per_stage, "predicted": predicted * 1e3, "peak_gib": float("nan"),
                         "layout": f"Table 9's stage of {per_stage} layers, b = {b}, tp 1, pp {p}"})
    return rows


def _ratios(rows: list[dict]) -> list[str]:
    """Each schedule against 1F1B at the same model and m: predicted ratio over published ratio."""
    by = {r["row"]: r for r in rows if r["table"] == "zero-bubble"}
    lines, worst = [], 0.0
    for (name, schedule) in ZB:
        if schedule == "1f1b":
            continue
        cells = []
        for m in ZB_M:
            ours, base = by[f"{name} {schedule} m={m}"], by[f"{name} 1f1b m={m}"]
            predicted = ours["predicted"] / base["predicted"]
            published = ours["published"] / base["published"]
            off = predicted / published - 1
            worst = max(worst, abs(off))
            cells.append(f"m={m}: {predicted:.3f} vs {published:.3f} ({off:+.1%})")
        lines.append(f"  {name} {schedule:<17} " + "   ".join(cells))
    lines.append(f"  largest |deviation| of a ratio to 1F1B: {worst:.1%} (target 3%)")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="processes for the planner's searches (default 2)")
    ap.add_argument("--table", default="megatron,zero-bubble,korthikanti,profile",
                    help="comma-separated tables: megatron, zero-bubble, korthikanti, profile (default all four)")
    args = ap.parse_args()
    tables = {"megatron": megatron, "zero-bubble": zero_bubble, "korthikanti": korthikanti, "profile": profile}
    chosen = args.table.split(",")
    if any(t not in tables for t in chosen):
        ap.error(f"--table: choose from {', '.join(tables)}")
    began = time.perf_counter()
    rows: list[dict] = []
    with open_workers(args.workers) as workers:
        for table in chosen:
            rows += tables[table](workers)
    print(f"{'row':<34} {'unit':<14} {'published':>9} {'predicted':>9} {'error':>7} {'peak GiB':>8}  layout")
    errors = []
    for r in rows:
        error = r["predicted"] / r["published"] - 1
        errors.append(abs(error))
        print(f"{r['row']:<34} {r['unit']:<14} {r['published']:>9.4g} {r['predicted']:>9.4g} {error:>+7.1%} "
              f"{r['peak_gib']:>8.1f}  {r['layout']}")
    issue = [e for e, r in zip(errors, rows) if r["table"] in ("megatron", "zero-bubble")]
    if issue:
        print(f"\nthe two tables of issue #17, {len(issue)} rows: median |error| {statistics.median(issue):.1%}, "
              f"max |error| {max(issue):.1%} (targets 5% and 10%)")
    for table in tables:
        mine = [e for e, r in zip(errors, rows) if r["table"] == table]
        if mine:
            print(f"  {table}: median {statistics.median(mine):.1%}, max {max(mine):.1%} over {len(mine)} rows")
    checked = [r for r in rows if "checked" in r]
    if checked:
        print(f"layouts Megatron-LM ran (microbatch 1 where the paper does not say) rejected as over 80 GiB: "
              f"{sum(r['rejected'] for r in checked)} of {sum(r['checked'] for r in checked)}")
    if any(r["table"] == "zero-bubble" for r in rows):
        print("\nthroughput relative to 1F1B at the same setting, predicted vs published:")
        print("\n".join(_ratios(rows)))
    print(f"\nbench ran in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
