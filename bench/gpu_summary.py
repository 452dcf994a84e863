"""The summary step of bench/gpu_check.sh: one Markdown page from a work folder of runs.

    python bench/gpu_summary.py WORK > gpu_check.md

WORK holds what the script wrote: ``steps.tsv`` (one line per step: name, group, size,
exit status or ``skipped``, seconds, output folder, log), ``logs/NAME.log``,
``runs/NAME/summary.json`` (the executor's), ``transfer.json``
(``bench/transfer_bench.py``), ``profile/costs.json``, ``nvidia-smi.csv`` and
``machine-mpi4py.txt``. Anything missing is said so in its cell; nothing here runs
anything. Standard library only: it runs wherever the script does.

The page: the preflight; one table with a row per run (measured step, the in-sample fit
and the profile's prediction with their errors, bubble fractions, in-run over alone per
op kind, the fitted link against the micro-benchmark at the run's message size, the
staging copies' rates, the CUDA peak over each step's baseline against the memory
meter's peak, the clock bounds); the --check verdicts; the micro-benchmark; the device
sharing; every step's status and time.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

__all__ = ["summarize", "main"]

MIB = 1 << 20
STEP_FIELDS = ("name", "group", "size", "status", "seconds", "out", "log")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps_of(work: Path) -> list[dict]:
    try:
        with open(work / "steps.tsv", newline="") as f:
            return [dict(zip(STEP_FIELDS, row)) for row in csv.reader(f, delimiter="\t") if row]
    except OSError:
        return []


def _num(value, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * scale:+.{digits}f}" if signed else f"{value * scale:.{digits}f}"


def _per_rank(values, scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "-"
    return " / ".join(_num(v, scale, digits) for v in values)


def _inflation(summary: dict) -> str:
    rows = summary.get("op_inflation") or []
    kinds = {}
    for row in rows:
        if row.get("ratio") is not None:
            kinds.setdefault(row["kind"], []).append(row["ratio"])
    return " ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(kinds.items())) or "-"


def _bench_at(transfer: dict | None, nbytes: float | None) -> tuple[float | None, int | None]:
    """The micro-benchmark's MPI rate at the size nearest ``nbytes`` (by ratio)."""
    rows = (transfer or {}).get("transfers") or []
    rows = [r for r in rows if r and r.get("mpi_gb_per_s")]
    if not rows or not nbytes:
        return None, None
    best = min(rows, key=lambda r: max(r["bytes"], nbytes) / min(r["bytes"], nbytes))
    return best["mpi_gb_per_s"], best["bytes"]


def _link(summary: dict, transfer: dict | None) -> str:
    costs = summary.get("costs") or {}
    latency, bandwidth = costs.get("latency"), costs.get("bandwidth")
    boundary = summary.get("boundary_bytes") or []
    bench, at = _bench_at(transfer, max(boundary) if boundary else None)
    fitted = f"{_num(latency, 1e6, 1)} us, {_num(bandwidth, 1e-9, 2)} GB/s" if costs else "-"
    return fitted + (f" (bench {bench:.2f} at {_size(at)})" if bench else "")


def _size(n: float | None) -> str:
    if not n:
        return "-"
    for unit, scale in (("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"


def _staging(summary: dict) -> str:
    table = summary.get("staging")
    if not table:
        return "-"
    return " / ".join(f"{kind} {_num(table[kind].get('gb_per_s'), 1, 2)}" for kind in ("D2H", "H2D") if kind in table)


def _clock(summary: dict) -> str:
    mpi, device = summary.get("clock_error_s"), summary.get("cuda_clock_mapping_error_s")
    return _num(mpi, 1e6, 1) + (f" + {_num(device, 1e6, 1)}" if device is not None else "")


def _tail_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    hits = [line for line in lines if "Error" in line or "error" in line or "FAILED" in line or "executor:" in line]
    return (hits or lines or ["empty log"])[-1][:160].replace("|", "/")


RUN_HEAD = ("| run | size | m | step ms | fit ms | fit err % | profile ms | profile err % raw / x canary "
            "| bubble meas / fit "
            "| in-run / alone | link fit (bench MPI GB/s) | staging GB/s | CUDA peak over baseline MiB "
            "| meter peak MiB | clock err us (MPI + device) |")


def run_row(step: dict, work: Path, transfer: dict | None) -> str:
    name, size = step["name"], step["size"]
    summary = _load(work / step["out"] / "summary.json") if step["out"] not in ("", "-") else None
    if step["status"] == "skipped":
        return f"| {name} | {size} | skipped: {step['seconds']} |" + " |" * 12
    if summary is None:
        why = f"failed (exit {step['status']}): {_tail_error(work / step['log'])}"
        return f"| {name} | {size} | {why} |" + " |" * 12
    if step["status"] != "0":  # outputs written, then a failure (the log says which)
        name = f"{name} (exit {step['status']}: {_tail_error(work / step['log'])})"
    cells = [name, size, str(summary.get("microbatches", "-")), _num(summary.get("measured_step_time"), 1e3),
             _num(summary.get("predicted_step_time"), 1e3), _num(summary.get("error_pct"), 1, 2, True),
             _num(summary.get("profile_predicted_step_time_raw", summary.get("profile_predicted_step_time")), 1e3),
             f"{_num(summary.get('profile_error_pct_raw', summary.get('profile_error_pct')), 1, 2, True)} / "
             f"{_num(summary.get('canary_error_pct'), 1, 2, True)}",
             f"{_num(summary.get('measured_bubble_fraction'))} / {_num(summary.get('predicted_bubble_fraction'))}",
             _inflation(summary), _link(summary, transfer), _staging(summary),
             _per_rank(summary.get("cuda_step_peak_above_baseline_bytes"), 1 / MIB, 2),
             _per_rank(summary.get("measured_peak_activation_bytes"), 1 / MIB, 2), _clock(summary)]
    return "| " + " | ".join(cells) + " |"


def _preflight(work: Path, transfer: dict | None) -> list[str]:
    lines = ["## Preflight", ""]
    try:
        rows = list(csv.reader((work / "nvidia-smi.csv").read_text().splitlines()))
        head, *gpus = [[c.strip() for c in row] for row in rows]
        lines += [f"- GPU {i}: " + ", ".join(f"{h} {v}" for h, v in zip(head, gpu)) for i, gpu in enumerate(gpus)]
    except (OSError, ValueError):
        lines.append("- nvidia-smi: no answer (see the archive's logs)")
    facts = (transfer or {}).get("preflight") or []
    if facts:
        first = facts[0]
        lines.append(f"- torch {first['torch']}, CUDA {first['cuda']}, Python {first['python']} ({first['executable']})")
        lines.append(f"- mpi4py {first['mpi4py']} from {first['mpi4py_file']}; {first['mpi_library']} "
                     f"(MPI {first['mpi_version']}), thread level {first['mpi_thread_level']}")
        lines.append(f"- transfers {first['transfers']} (CUDA-aware MPI: {first['cuda_aware_mpi']})")
        for f in facts:
            gpu = f" ({f['gpu']}, {f['gpu_memory_bytes'] / (1 << 30):.0f} GiB, sm {f['capability']})" if "gpu" in f else ""
            lines.append(f"- rank {f['rank']} on {f['host']}, local rank {f['local_rank']} of {f['ranks_on_node']}: "
                         f"{f['device']}{gpu}, {f['torch_threads']} torch threads")
    else:
        lines.append("- no preflight facts: the transfer bench did not finish")
    try:
        own = (work / "machine-mpi4py.txt").read_text().strip().splitlines()
        lines.append("- the machine's own mpi4py: " + ("; ".join(own) if own else "none"))
    except OSError:
        pass
    return lines + [""]


def _transfers(transfer: dict | None) -> list[str]:
    rows = (transfer or {}).get("transfers") or []
    if not rows:
        return ["## Transfers", "", "not measured", ""]
    lines = ["## Transfers (GB/s, median of %s; through the run's Wire)" % transfer.get("repeats"), "",
             "| bytes | device to pinned | MPI host to host | pinned to device | whole staged path |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_size(r['bytes'])} | " + " | ".join(
            _num(r.get(f"{k}_gb_per_s"), 1, 2) for k in ("d2h", "mpi", "h2d", "staged")) + " |")
    share = transfer.get("share") or {}
    if share:
        lines += ["", f"Device sharing ({share['matmul']}, {share['products_per_rank']} products a rank): rate with "
                      f"both ranks at once over alone, per rank: "
                      + ", ".join(f"{r:.3f}" for r in share["rate_together_over_alone"])
                      + "; alone " + ", ".join(f"{t:.1f}" for t in share["alone_tflop_per_s"]) + " TFLOP/s."]
    return lines + [""]


def _profile(work: Path) -> list[str]:
    doc = _load(work / "profile" / "costs.json")
    if doc is None:
        return []
    links = doc.get("links") or {}
    return ["## Profile", "",
            f"- share (per-rank rate with k ranks computing at once, the simulator's): "
            f"{', '.join(f'{s:.3f}' for s in doc.get('share') or [])}",
            f"- comm interference {doc.get('comm_interference', 0):.3f}; link {_num(links.get('latency'), 1e6, 1)} us, "
            f"{_num(links.get('bandwidth'), 1e-9, 2)} GB/s",
            f"- layouts: " + ", ".join(f"chunks {t['chunks']} m {t['microbatches']}" for t in doc.get("layouts", [])),
            ""]


def summarize(work: Path) -> str:
    steps = steps_of(work)
    transfer = _load(work / "transfer.json")
    lines = ["# bench/gpu_check.sh", ""]
    lines += _preflight(work, transfer)
    runs = [s for s in steps if s["group"] == "run"]
    lines += ["## Runs", "", "Times in ms; errors are prediction over measured, minus 1; fit: the simulator "
              "calibrated on the run's own trace; profile: predicted from the profile before the run; "
              "in-run / alone: median ratio per op kind; per-rank figures as r0 / r1.", "", RUN_HEAD,
              "|" + "---|" * 15]
    lines += [run_row(s, work, transfer) for s in runs] or ["| no runs | |" + " |" * 13]
    checks = [s for s in steps if s["group"] == "check"]
    if checks:
        lines += ["", "## Checks (--check, float32)", ""]
        for s in checks:
            verdict = "skipped" if s["status"] == "skipped" else _verdict(work / s["log"], s["status"])
            lines.append(f"- {s['name']}: {verdict}")
    lines += [""] + _transfers(transfer) + _profile(work)
    lines += ["## Steps", "", "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in steps]
    return "\n".join(lines) + "\n"


def _verdict(log: Path, status: str) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"exit {status}, no log"
    found = [line.strip() for line in text.splitlines() if line.strip().startswith("check ")]
    return found[-1] if found else f"exit {status}: {_tail_error(log)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/gpu_summary.py WORK", file=sys.stderr)
        return 2
    sys.stdout.write(summarize(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
