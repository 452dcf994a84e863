"""Measures the figures of :mod:`simulator.bounds`: ``python -m simulator.measure``.

Per op: the peak resident memory of ``python -m simulator`` at about 300k lowered ops less
that of the same command at a tiny size, per op of :func:`schedules.bounds.lowered_ops`,
the largest over several builders and both semantics; each output's figure is the same
difference with the output asked for, less the run without it. Per grid point of a sweep,
and per byte of a trace CSV or a costs.json of the worst shapes (the shortest cells, a
dict per three characters), likewise. Runs in about ten minutes (``run``, ``outputs``, ``sweep`` or ``files`` runs one part).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import schedules
from schedules.bounds import lowered_ops
from schedules.measure import SIZES, peak_rss

from .bounds import BYTES_PER_OP, JSON_BYTES_PER_BYTE, OUTPUT_BYTES_PER_OP, SWEEP_BYTES_PER_POINT, TRACE_BYTES_PER_BYTE

__all__ = ["main"]


def _sim(name: str, p: int, m: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "simulator", "--schedule", name, "--ranks", str(p), "--microbatches", str(m), *flags]


def _per_op(name: str, p: int, m: int, *flags: str, less: tuple[str, ...] | None = None) -> float:
    """Peak at (p, m) less peak at a tiny size, per op of the estimate; with ``less``, less
    the same difference for those flags instead (what ``flags`` add)."""
    tiny = min(m, 2 * p)  # dualpipev needs m >= 2p
    ops = lowered_ops(p * schedules.default_chunks(name), m)
    grow = peak_rss(_sim(name, p, m, *flags)) - peak_rss(_sim(name, p, tiny, *flags))
    if less is not None:
        grow -= peak_rss(_sim(name, p, m, *less)) - peak_rss(_sim(name, p, tiny, *less))
    return grow / ops


def _per_byte(path: Path, argv: list[str]) -> float:
    """Peak of ``argv`` reading ``path`` less peak reading a tiny file of the same shape, per byte."""
    text = path.read_text()
    small = path.with_name("small-" + path.name)
    small.write_text(text[:2000] if path.suffix == ".csv" else "[]")
    big, tiny = peak_rss([a.replace("{}", str(path)) for a in argv]), peak_rss([a.replace("{}", str(small)) for a in argv])
    return (big - tiny) / len(text)


def _refused(argv: list[str]) -> list[str]:
    """``argv`` under a shell that accepts its exit code 2 (the files are meant to be refused)."""
    return ["sh", "-c", '"$@"; test $? -le 2', "sh", *argv]


# The costs of bench/simulator_speed.py: links, activation memory, ranks sharing nodes.
COSTS = ("--act-bytes", "16777216", "--bandwidth", "12.5e9", "--latency", "1e-5", "--act-memory", "3.2e8",
         "--ranks-per-node", "8", "--share", "1,0.99,0.98,0.97,0.96,0.95,0.94,0.93")


def run() -> None:
    print(f"{'schedule':<17} {'p':>3} {'m':>5} {'async':>6} {'blocking':>8} {'with costs':>10}   (bytes per op of "
          f"the estimate)")
    runs = []
    for name, p, m in SIZES:
        figures = [_per_op(name, p, m, "--comm", comm_mode) for comm_mode in ("async", "blocking")]
        figures.append(_per_op(name, p, m, *COSTS))
        runs.append(max(figures))
        print(f"{name:<17} {p:>3} {m:>5} {figures[0]:>6.0f} {figures[1]:>8.0f} {figures[2]:>10.0f}", flush=True)
    print(f"run: largest {max(runs):.0f} B/op (BYTES_PER_OP = {BYTES_PER_OP})")


def outputs(out: Path) -> None:
    for flag, (name, p, m) in (("--csv", SIZES[0]), ("--trace", SIZES[0]), ("--gantt", ("1f1b", 16, 1024)),
                               ("--csv", SIZES[3]), ("--trace", SIZES[3]), ("--gantt", ("zbv", 8, 1024))):
        path = out / f"x{flag}.{'png' if flag == '--gantt' else 'out'}"
        figure = _per_op(name, p, m, flag, str(path), "--force", less=())
        print(f"{flag:<8} {name} p={p} m={m}: {figure:.0f} B/op more (OUTPUT_BYTES_PER_OP = "
              f"{OUTPUT_BYTES_PER_OP[flag]})", flush=True)


def sweep() -> None:
    points = 2 * 2 * 400 * len(schedules.names())
    argv = [sys.executable, "-m", "simulator", "sweep", "--quiet", "--ranks", "1,2", "--comm", "async,blocking",
            "--microbatches"]
    grow = peak_rss(argv + [",".join(map(str, range(1, 401)))]) - peak_rss(argv + ["1"])
    print(f"sweep: {grow / points:.0f} B/point over {points} points (SWEEP_BYTES_PER_POINT = {SWEEP_BYTES_PER_POINT})",
          flush=True)


def files(out: Path) -> None:
    trace = out / "trace.csv"  # the shortest cells a calibration takes: an F and a B of stage 0
    trace.write_text("rank,stage,mb,kind,stream,start,end\n" + "0,0,0,F,compute,0,1\n0,0,0,B,compute,1,2\n" * 500_000)
    print(f"trace CSV: {_per_byte(trace, _refused(_sim('1f1b', 2, 2, '--costs-from', '{}'))):.0f} B/byte "
          f"(TRACE_BYTES_PER_BYTE = {TRACE_BYTES_PER_BYTE})", flush=True)
    figures = []
    for shape in ("{}", "[]", "0", "0.5"):
        path = out / "costs.json"
        path.write_text("[" + ",".join([shape] * 2_000_000) + "]")
        figures.append(_per_byte(path, _refused(_sim("1f1b", 2, 2, "--costs", "{}"))))
    print(f"costs.json: {', '.join(f'{f:.0f}' for f in figures)} B/byte for lists of {{}}, [], 0, 0.5 "
          f"(JSON_BYTES_PER_BYTE = {JSON_BYTES_PER_BYTE})")


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator.measure [run] [outputs] [sweep] [files]`` (default: all four)."""
    parts = (argv if argv is not None else sys.argv[1:]) or ["run", "outputs", "sweep", "files"]
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            {"run": run, "outputs": lambda: outputs(Path(tmp)), "sweep": sweep, "files": lambda: files(Path(tmp))}[part]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
