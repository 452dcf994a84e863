"""``--describe``: the model's figures, and what a layer and each stage end cost on one GPU.

The costs are F, I and W of one microbatch at the first of each searched value
(``--microbatch-size``, ``--tp``, ``--sequence-parallel``, ``--recompute``), split into
GEMM, memory-bound and tensor-parallel communication time, from :mod:`planner.ops`.
"""

from __future__ import annotations

from dataclasses import replace

from .ops import COLLECTIVES, PHASES, embedding_ops, head_ops, layer_ops, op_time
from .space import PlanConfig

__all__ = ["describe"]


def _parts(ops: dict, config: PlanConfig, tp: int) -> dict:
    gpu, link = config.machine.gpu, config.machine.intra
    out = {}
    for phase in PHASES:
        times = {"gemm": 0.0, "memory": 0.0, "comm": 0.0}
        for op in ops[phase]:
            times["comm" if op.kind in COLLECTIVES else op.kind] += op_time(op, gpu, link, tp)
        out[phase] = {"seconds": sum(times.values()), **{f"{k}_seconds": v for k, v in times.items()},
                      "flops": sum(op.flops for op in ops[phase])}
    return out


def describe(config: PlanConfig) -> dict:
    """The figures ``python -m planner --describe --json`` prints."""
    spec = replace(config.model, microbatch_size=config.microbatch_sizes[0])
    tp = (config.tp or (1,))[0]
    sp = config.sequence_parallel[-1] and tp > 1
    recompute = config.recompute[0]
    costs = {"gpu": config.machine.gpu.name, "tp": tp, "sequence_parallel": sp, "recompute": recompute,
             "microbatch_size": spec.microbatch_size,
             "layer": _parts(layer_ops(spec, tp, sp, recompute), config, tp),
             "embedding": _parts(embedding_ops(spec, tp, sp), config, tp),
             "head": _parts(head_ops(spec, tp, sp), config, tp)}
    return {**spec.describe(), "activation_bytes_per_layer_per_gpu": spec.activation_bytes_per_layer(recompute, tp, sp),
            "costs": costs}


def format_describe(figures: dict) -> str:
    """The text form: the model's figures, then a table of F, I, W per layer and stage end."""
    lines = []
    for key, value in figures.items():
        if key == "costs":
            continue
        lines.append(f"{key:<38} {value:.6g}" if isinstance(value, float) else f"{key:<38} {value}")
    c = figures["costs"]
    lines += ["", f"one microbatch (b = {c['microbatch_size']}) on one {c['gpu']}, tp {c['tp']}, "
              f"sequence parallel {'on' if c['sequence_parallel'] else 'off'}, recompute {c['recompute']} "
              f"(ms; GEMM / memory-bound / TP communication):",
              f"{'':<10}" + "".join(f"{p:>28}" for p in PHASES)]
    for part in ("layer", "embedding", "head"):
        cells = []
        for p in PHASES:
            t = c[part][p]
            cells.append(f"{t['seconds'] * 1e3:9.3f} ({t['gemm_seconds'] * 1e3:.2f}/{t['memory_seconds'] * 1e3:.2f}/"
                         f"{t['comm_seconds'] * 1e3:.2f})")
        lines.append(f"{part:<10}" + "".join(f"{cell:>28}" for cell in cells))
    return "\n".join(lines)
