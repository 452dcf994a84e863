"""Measures the figures of :mod:`schedules.bounds`: ``python -m schedules.measure``.

Each figure is the peak resident memory of a run at about 300k lowered ops less that of
the same run at a tiny size, per op of :func:`schedules.bounds.lowered_ops` (the estimate
the checks multiply), the largest over several builders: a build and a ``blocking``
validation, and the whole CLI (printing the grid of the compute ops, or of the lowered
ops with ``--comms``). Runs in about a minute.
"""

from __future__ import annotations

import subprocess
import sys

from .bounds import BYTES_PER_OP, GRID_BYTES_PER_CELL, lowered_ops
from .registry import default_chunks

__all__ = ["peak_rss", "SIZES"]

_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")

# Sizes of about 300k lowered ops: large enough that the per-op part dwarfs the interpreter.
SIZES = [("1f1b", 32, 1024), ("zb-h1", 32, 768), ("interleaved-1f1b", 16, 1024), ("zbv", 16, 768),
         ("dualpipev", 16, 1024), ("looped-bfs", 16, 1024)]


def peak_rss(argv: list[str]) -> int:
    """Peak resident bytes of the command ``argv`` (run as the only child of a fresh process)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _validate(name: str, p: int, m: int) -> list[str]:
    code = f"import schedules; schedules.validate(schedules.build({name!r}, ranks={p}, microbatches={m}), 'blocking')"
    return [sys.executable, "-c", code]


def _cli(*flags: str):
    def argv(name: str, p: int, m: int) -> list[str]:
        return [sys.executable, "-m", "schedules", name, "--ranks", str(p), "--microbatches", str(m),
                "--comm", "blocking", *flags]
    return argv


def per_op(argv, name: str, p: int, m: int) -> float:
    """(peak at (p, m) - peak at a tiny size) per op of the estimate."""
    tiny = min(m, 2 * p)  # dualpipev needs m >= 2p
    return (peak_rss(argv(name, p, m)) - peak_rss(argv(name, p, tiny))) / lowered_ops(p * default_chunks(name), m)


_GRID = ("import schedules, tracemalloc; lowered = schedules.validate(schedules.build({name!r}, ranks={p}, "
         "microbatches={m}), 'blocking'); shown = lowered.program if {comms} else lowered.compute_only(); "
         "cells = shown.num_ranks * max(map(len, shown.ops)); tracemalloc.start(); schedules.format_grid(shown); "
         "print(tracemalloc.get_traced_memory()[1] / cells)")


def grid_per_cell(name: str, p: int, m: int, comms: bool) -> float:
    """Peak bytes per cell (ranks x steps) of the step x rank grid's text."""
    code = _GRID.format(name=name, p=p, m=m, comms=comms)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> int:
    runs = {"validate": _validate, "cli": _cli(), "cli --comms": _cli("--comms")}
    print(f"{'schedule':<17} {'p':>3} {'m':>5} " + " ".join(f"{k + ' B/op':>17}" for k in runs)
          + "   (per op of the estimate 7 * stages * m + stages)")
    worst = dict.fromkeys(runs, 0.0)
    for name, p, m in SIZES:
        figures = {k: per_op(argv, name, p, m) for k, argv in runs.items()}
        worst = {k: max(worst[k], figures[k]) for k in runs}
        print(f"{name:<17} {p:>3} {m:>5} " + " ".join(f"{figures[k]:>17.0f}" for k in runs), flush=True)
    print(f"largest: " + ", ".join(f"{k} {v:.0f}" for k, v in worst.items()) + f" B/op; in use: BYTES_PER_OP = "
          f"{BYTES_PER_OP} (the CLI's grid is made after the validation's peak, and has fewer cells than ops)")
    cells = [grid_per_cell(name, p, m // 4, comms) for name, p, m in SIZES for comms in (False, True)]
    print(f"grid: {', '.join(f'{c:.0f}' for c in cells)} B/cell (each schedule at m / 4, compute ops and lowered); "
          f"largest {max(cells):.0f}; in use: GRID_BYTES_PER_CELL = {GRID_BYTES_PER_CELL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
