"""What rank 0 writes after a run: trace.csv, trace.json (Perfetto), gantt.png,
summary.json, compare.png (staging.csv where transfers were staged), and the
predicted-against-measured table it prints.

trace.csv, trace.json and gantt.png hold the median timed step (times from that step's
origin), in the shared trace schema; trace_steps.csv holds every timed step (plus a
``step`` column), which is what calibration uses. trace.json's memory counter is the
measured one (:mod:`executor.compute.memory`); summary.json sets each pipeline rank's
measured peak beside the simulator's prediction (:mod:`executor.results.held`), and, with
--inflation, each op's in-run median over its median alone.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
from timeline import TRACE_COLUMNS
from timeline.gantt import plot_compare, plot_gantt
from timeline.perfetto import write_perfetto

from . import held
from .device import device_keys
from .predict import Comparison, ErrorSplit, compare_run, measured, predict_from_alone
from ..engine.steps import RunResult

__all__ = ["write_outputs", "format_table", "format_split", "format_inflation", "inflation"]


def _number(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def format_table(label: str, cmp: Comparison) -> str:
    """The one predicted-against-measured table: "fit" is calibrated on this run's own
    trace (in sample); "predicted (profile)", with --costs, was computed before it ran
    (and "x canary" the same with the machine's drift since the profile taken out);
    then where the profile's error comes from."""
    analytic = "-" if cmp.analytic_bubble is None else f"{cmp.analytic_bubble:.4f}"
    head = f"  {'':18}{'measured':>11}{'fit':>11}{'error %':>9}"
    step = (f"  {'step time (ms)':18}{cmp.measured_step_time * 1e3:>11.3f}{cmp.predicted_step_time * 1e3:>11.3f}"
            f"{cmp.error_pct:>+9.2f}")
    bubble = f"  {'bubble fraction':18}{cmp.measured_bubble:>11.4f}{cmp.predicted_bubble:>11.4f}{'':>9}"
    split = cmp.split
    if split is not None:
        head += f"{'predicted (profile)':>21}{'error %':>9}"
        step += f"{split.raw_step_time * 1e3:>21.3f}{split.raw_error_pct:>+9.2f}"
        bubble += f"{'':>30}"
        if split.canary_step_time is not None:
            head += f"{'x canary':>11}{'error %':>9}"
            step += f"{split.canary_step_time * 1e3:>11.3f}{split.canary_error_pct:>+9.2f}"
            bubble += f"{'':>20}"
    lines = [label, head + f"{'analytic':>10}", step, bubble + f"{analytic:>10}"]
    if split is not None:
        lines += format_split(split)
    return "\n".join(lines)


def format_split(split: ErrorSplit) -> list[str]:
    """The profile's error as the product of op drift, remainder and model error."""
    which = "canary-scaled" if split.scaled else "raw"
    drift = ("canary: no drift (the profile or the run has no canary)" if split.canary_drift is None else
             f"canary: the machine runs x{split.canary_drift:.3f} of the profile's time now"
             + ("" if split.scaled else " (pass --canary to scale the prediction by it)"))
    ops = "  ".join(f"{r['stage']}{r['kind']} {r['ratio']:.3f}" for r in split.op_drift if r["ratio"] is not None)
    return [f"  {drift}",
            f"  the {which} prediction's error {split.profile_error_pct:+.2f} % = op drift {split.op_drift_pct:+.2f} % "
            f"x remainder (host time, links) {split.remainder_pct:+.2f} % x model error {split.model_error_pct:+.2f} %",
            f"  op drift, the run's op time over the profile's: {ops}"]


def inflation(result: RunResult) -> list[dict]:
    """Per pipeline rank, stage and kind: median in the run, median alone, and their ratio."""
    if result.alone is None:
        return []
    inside = result.trace[result.trace["kind"].isin(["F", "B", "I", "W"])]
    inside = inside.assign(duration=inside["end"] - inside["start"]).groupby(["stage", "kind"])["duration"].median()
    out = []
    for rank, table in enumerate(result.alone[:result.plan.ranks]):  # replica 0's world ranks
        for (stage, kind), alone in sorted(table.items()):
            if (stage, kind) in inside.index:
                run = float(inside[(stage, kind)])
                out.append({"rank": rank, "stage": stage, "kind": kind, "run_s": run, "alone_s": alone,
                            "ratio": run / alone if alone > 0 else None})
    return out


def format_inflation(rows: list[dict]) -> str:
    lines = [f"  {'rank':>4}{'stage':>6}{'kind':>5}{'in run (ms)':>13}{'alone (ms)':>12}{'ratio':>8}"]
    lines += [f"  {r['rank']:>4}{r['stage']:>6}{r['kind']:>5}{r['run_s'] * 1e3:>13.3f}{r['alone_s'] * 1e3:>12.3f}"
              f"{r['ratio']:>8.3f}" for r in rows]
    return "\n".join(lines)


def _memory(result: RunResult, cmp: Comparison | None) -> dict:
    plan = result.plan
    out = {"measured_peak_activation_bytes": held.measured_peaks(result.memory, plan.ranks)}
    if cmp is not None:
        out["predicted_peak_activation_bytes"] = held.predicted_peaks(
            plan.schedule, cmp.costs, result.memory, plan.output_bytes())
        sizes, share = held.per_microbatch(plan.schedule.ops, result.memory, plan.schedule.num_stages)
        out["measured_activation_bytes_per_microbatch"] = sizes
        out["measured_w_memory_fraction"] = share
    if result.cuda_peak is not None:
        out["cuda_max_memory_allocated_bytes"] = result.cuda_peak
    return out


def _summary(result: RunResult, times: list[float], bubbles: list[float], cmp: Comparison | None) -> dict:
    plan, cfg = result.plan, result.plan.cfg
    out = {
        "schedule": cfg.schedule_label, "ranks": plan.ranks, "microbatches": cfg.microbatches,
        "chunks": plan.schedule.chunks, "dp": cfg.dp, "comm": cfg.comm_mode, "compute": cfg.compute,
        "device": str(plan.device), "dtype": cfg.dtype, "model": cfg.model, "steps": cfg.steps,
        "warmup": cfg.warmup, "step_times": times, "bubble_fractions": bubbles,
        "measured_step_time": float(pd.Series(times).median()),
        "measured_bubble_fraction": float(pd.Series(bubbles).median()),
        "clock_error_s": result.clock_error, "loss": _number(result.loss), "check": result.message or None,
        "progress": cfg.progress, "watchdog_s": result.watchdog_s,
    }
    out.update(_memory(result, cmp))
    out.update(device_keys(result))  # thread level, boundary bytes; on a GPU per-step memory, staging, clock
    if result.alone is not None:
        out["op_inflation"] = inflation(result)
        if cmp is not None:  # the instrument's whole cost: measured over ops-alone prediction
            alone = predict_from_alone(result.plan, cmp.costs, result.alone)
            out["predicted_step_time_from_alone"] = alone
            out["overhead"] = out["measured_step_time"] / alone
    if cmp is not None:
        costs = cmp.costs
        out.update({
            "predicted_step_time": cmp.predicted_step_time, "error_pct": cmp.error_pct,
            "predicted_bubble_fraction": cmp.predicted_bubble,
            "profile_predicted_step_time": cmp.profile_step_time, "profile_error_pct": cmp.profile_error_pct,
            "analytic_bubble_fraction": cmp.analytic_bubble,
            "costs": {"t_f": costs.t_f, "t_i": costs.t_i, "t_w": costs.t_w,
                      "latency": _number(costs.latency), "bandwidth": _number(costs.bandwidth),
                      "optimizer_time": costs.optimizer_time, "notes": list(costs.notes)},
        })
    if result.cpu is not None and len(result.cpu):
        per = result.cpu.groupby(["stage", "kind"])["seconds"].median()
        out["op_cpu_time"] = [{"stage": int(s), "kind": k, "seconds": float(v)} for (s, k), v in per.items()]
    if cmp is not None and cmp.split is not None:
        out.update(_split(cmp.split))
    return out


def _split(split: ErrorSplit) -> dict:
    """summary.json's keys for the profile's prediction and the split of its error."""
    return {
        "profile_predicted_step_time_raw": split.raw_step_time, "profile_error_pct_raw": split.raw_error_pct,
        "canary_drift": split.canary_drift, "canary_predicted_step_time": split.canary_step_time,
        "canary_error_pct": split.canary_error_pct, "canary_scaled": split.scaled,
        "op_drift": split.op_drift,
        "model_error": 1.0 + split.model_error_pct / 100.0,
        "remainder": 1.0 + split.remainder_pct / 100.0,
        "error_split": {"profile_error_pct": split.profile_error_pct, "op_drift_pct": split.op_drift_pct,
                        "remainder_pct": split.remainder_pct, "model_error_pct": split.model_error_pct},
    }


def write_outputs(result: RunResult, out: Path, predict: bool = True) -> tuple[dict, Comparison | None, list[str]]:
    """Write every output file under ``out`` (claimed before the run); return the summary,
    the comparison, and one line per file that could not be written. A file that fails
    does not stop the others; a summary that cannot go to ``out`` goes to the temporary
    folder instead, and the line says where."""
    trace = result.trace
    times, bubbles, median_step = measured(trace, result.plan.ranks)
    one = trace[trace["step"] == median_step][TRACE_COLUMNS].reset_index(drop=True)
    cfg = result.plan.cfg  # named in plot titles and the Perfetto trace's metadata
    one.attrs.update(schedule=cfg.schedule_label, ranks=result.plan.ranks, microbatches=cfg.microbatches,
                     source="measured", comm=cfg.comm_mode, compute=cfg.compute)
    cmp = compare_run(result.plan, trace, result.canary, result.cpu) if predict else None
    summary = _summary(result, times, bubbles, cmp)
    text = json.dumps(summary, indent=2, default=str) + "\n"
    failed: list[str] = []

    def attempt(name: str, write) -> None:
        try:
            write(out / name)
        except OSError as err:
            failed.append(f"could not write {out / name}: {err.strerror or err}")

    attempt("summary.json", lambda path: path.write_text(text))
    if failed:  # the figures of the run are kept somewhere
        fallback = Path(tempfile.gettempdir()) / f"pipebubble-summary-{os.getpid()}.json"
        try:
            fallback.write_text(text)
            failed.append(f"the summary went to {fallback} instead")
        except OSError:
            pass
    attempt("trace.csv", lambda path: one.to_csv(path, index=False))
    attempt("trace_steps.csv", lambda path: trace.to_csv(path, index=False))  # every timed step, with a step column
    if result.staging is not None:  # the staging copies of every timed step (a GPU without CUDA-aware MPI)
        attempt("staging.csv", lambda path: result.staging.to_csv(path, index=False))
    attempt("trace.json", lambda path: write_perfetto(
        one, path, memory=held.memory_timeline(result.memory, one, result.plan.schedule.ops)))
    attempt("gantt.png", lambda path: plot_gantt(one, path))
    if cmp is not None:
        attempt("compare.png", lambda path: plot_compare(one, cmp.predicted.trace, labels=("measured", "predicted"),
                                                         path=path))
    return summary, cmp, failed
