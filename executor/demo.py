"""``python -m executor.demo`` (what ``make demo`` runs): the whole project in one command.

Everything goes into one new folder, ``out/demo-<date>-<time>/`` (``out/demo`` links to
the newest), or ``--out DIR``, which must be new or empty:

1. Every built-in schedule at p = 4, m = 8: its step x rank grid, the simulator's summary,
   a Gantt PNG and a Perfetto trace under ``sim-<schedule>-p4-m8/``. Costs are those
   of one model: a rank's share of one microbatch takes t_f = 1 forward and
   t_b = t_i + t_w = 2 backward, so a schedule with v chunks per rank gets 1/v per chunk;
   communication is free, so the bubble fractions match the closed forms of
   :mod:`schedules.analytic`.
2. A profile of the model on 2 ranks (``python -m executor profile``, m = 8, chunks 1
   and 2: ``profile/costs.json``), and from it the step time and bubble of every
   schedule at p = 2, m = 8, predicted before any of them runs.
3. The executor for real: 1F1B on 2 ranks with real compute, 20 timed steps, under the
   bundled mpiexec (the one beside this Python); it prints the step predicted from the profile before
   the run (raw, and scaled by the machine's drift since the profile, ``--canary``)
   against the measured one and the in-sample fit, where the profile's error comes from
   (op drift, host time and links, model error), and writes
   ``run-1f1b-p2-m8/`` (trace.csv, trace.json, gantt.png, compare.png, summary.json).
4. The list of files written and how to open a trace.

Exit status 0; 1 when a step fails (a line names it; an unexpected error in a step ends
the demo with its traceback, also status 1); usage errors exit 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from cliguard import UsageError, claim_dir, fresh_dir

import schedules
import simulator
from simulator.cli import format_summary
from timeline.gantt import plot_gantt

from .launch import MPIEXEC, launch  # re-exported: notebooks import launch from here

__all__ = ["main", "launch", "simulate_all", "run_executor", "MPIEXEC"]

P_SIM, M_SIM = 4, 8  # the gallery size: small enough to read every op in the grid
P_RUN, M_RUN = 2, 8  # two ranks with real compute fit this 2-core machine
STEPS, WARMUP = 20, 3  # three trials back to back: canary error -1.2…+3.9 % at 20 steps, -5.9…+7.2 % at 5
RUN_TIMEOUT_S = 150
RUN_FILES = ("trace.csv", "trace.json", "gantt.png", "compare.png", "summary.json")  # the executor's outputs


class StepFailed(RuntimeError):
    """A demo step did not complete; the message says which and why."""


def _banner(text: str) -> None:
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}", flush=True)


def simulate_all(out: Path) -> list[Path]:
    """Step 1: grid, summary, Gantt and Perfetto trace of each built-in schedule."""
    print("Simulated schedules: a rank's share of one microbatch costs 1 time unit forward and 2 backward\n"
          "(printed as seconds; v chunks per rank get 1/v each), communication is free, and memory counts\n"
          "the activations of one microbatch on one rank share as 1 (printed as bytes).")
    written, results = [], []
    for name in schedules.names():
        _banner(f"{name}: p = {P_SIM}, m = {M_SIM} (steps are positions in each rank's list, not time)")
        schedule = schedules.build(name, ranks=P_SIM, microbatches=M_SIM)
        print(schedules.format_grid(schedule))
        result = simulator.simulate(schedule, simulator.Costs.model_share(schedule.chunks))
        results.append(result)
        print(format_summary(result))
        folder = out / f"sim-{name}-p{P_SIM}-m{M_SIM}"
        gantt, trace = folder / "gantt.png", folder / "trace.json"
        plot_gantt(result.trace, gantt)
        simulator.to_chrome_trace(result.trace, trace, result.costs.act_memory, result.costs.w_memory_fraction)
        written += [gantt, trace]
    _overview(results)
    return written


def _overview(results: list[simulator.SimResult]) -> None:
    """All schedules side by side, from the simulations just run."""
    table = pd.DataFrame([{
        "schedule": r.schedule.name, "chunks": r.schedule.chunks, "makespan": r.makespan,
        "bubble": r.bubble_fraction,
        "analytic": r.costs.closed_form_bubble(r.schedule.name, P_SIM, M_SIM, r.schedule.chunks),
        "peak activations": r.per_rank["peak_memory_bytes"].max(),
    } for r in results])
    _banner(f"all schedules, p = {P_SIM}, m = {M_SIM} (bubble = share of rank-time idle; "
            "activations in microbatch rank-shares)")
    print(table.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}"))


def _launched(args: list[str], mpiexec: Path, what: str):
    if not mpiexec.exists():
        raise StepFailed(f"{what}: no mpiexec at {mpiexec} (install the project with `make install`)")
    try:
        done = launch(P_RUN, args, mpiexec, RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{what}: no result after {RUN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise StepFailed(f"{what}: exited with status {done.returncode}")


def profile_and_predict(out: Path, mpiexec: Path) -> list[Path]:
    """Step 2: profile once, then predict every schedule at p = 2 before running any."""
    folder = out / "profile"
    args = ["profile", "--microbatches", str(M_RUN), "--chunks", "1,2", "--out", str(folder)]
    _banner(f"profile: {mpiexec.name} -n {P_RUN} python -m executor {' '.join(args)}")
    _launched(args, mpiexec, "profile")
    if not (folder / "costs.json").is_file():
        raise StepFailed(f"profile: {folder} lacks costs.json")
    profile = simulator.Profile.load(folder / "costs.json")
    rows = []
    for name in schedules.names():
        try:
            schedule = schedules.build(name, ranks=P_RUN, microbatches=M_RUN)
            result = simulator.simulate(schedule, profile.costs(schedule))
        except (schedules.ScheduleError, ValueError) as err:  # e.g. a schedule that needs more ranks
            rows.append({"schedule": name, "step (ms)": None, "bubble": None, "note": str(err).splitlines()[0]})
            continue
        rows.append({"schedule": name, "step (ms)": result.makespan * 1e3, "bubble": result.bubble_fraction,
                     "note": f"chunks {schedule.chunks}"})
    _banner(f"predicted from the profile before running anything: p = {P_RUN}, m = {M_RUN}")
    print(pd.DataFrame(rows).to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}"))
    return [folder / "costs.json"]


def run_executor(out: Path, mpiexec: Path) -> list[Path]:
    """Step 3: the executor under mpiexec; its own output streams to this terminal."""
    folder = out / f"run-1f1b-p{P_RUN}-m{M_RUN}"
    args = ["--schedule", "1f1b", "--microbatches", str(M_RUN), "--compute", "real", "--out", str(folder),
            "--costs", str(out / "profile" / "costs.json"), "--canary", "--steps", str(STEPS), "--warmup", str(WARMUP)]
    _banner(f"executor: {mpiexec.name} -n {P_RUN} python -m executor {' '.join(args)}")
    began = time.time()
    _launched(args, mpiexec, "executor")
    written = sorted(p for p in folder.glob("*") if p.is_file() and p.stat().st_mtime >= began - 1)
    missing = set(RUN_FILES) - {p.name for p in written}
    if missing:
        raise StepFailed(f"executor: {folder} lacks {', '.join(sorted(missing))}")
    return written


def _listing(written: list[Path]) -> None:
    _banner("files written")
    here = Path.cwd()
    for path in written:
        shown = path.relative_to(here) if path.is_relative_to(here) else path
        print(f"  {shown}  ({path.stat().st_size / 1024:.0f} KiB)")
    print("\nOpen a trace.json at https://ui.perfetto.dev (Open trace file, or drag it onto the page;\n"
          "chrome://tracing loads it too): one process per rank with compute, send and recv tracks,\n"
          "arrows from each send to its receive, and a counter of activation memory.\n"
          "The PNGs open in any image viewer; compare.png sets the measured run over its prediction.")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m executor.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for everything the demo writes, new or empty (default: a new "
                    "out/demo-<date>-<time>/, linked from out/demo: an earlier demo's files are never replaced)")
    ap.add_argument("--mpiexec", default=str(MPIEXEC),
                    help="mpiexec to launch the executor with (default: the one beside this Python)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = (claim_dir(args.out) if args.out else fresh_dir("out", "demo")).resolve()
    except UsageError as err:
        print(f"python -m executor.demo: error: {err}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        written = simulate_all(out)
        written += profile_and_predict(out, Path(args.mpiexec))
        written += run_executor(out, Path(args.mpiexec))
    except StepFailed as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    _listing(written)
    print(f"\ndemo done in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
