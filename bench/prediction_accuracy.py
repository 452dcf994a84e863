"""The out-of-sample matrix: profile once, predict every cell before running it, then run it.

    .venv/bin/python bench/prediction_accuracy.py [--modes mlp,transformer,shared,sleep] [--steps 10]

Per mode: ``python -m executor profile`` once (chunks 1 and 2, the m of the matrix);
then for every built-in schedule (those that split the model in a V or loop it with 2
chunks) x m in 4, 8, 16 at the same batch, the simulator's prediction from
``simulator.Profile`` is printed for every cell first; only then is each cell run under
mpiexec (``--steps`` timed steps, default 10) and its error printed.

Modes: ``mlp`` p = 2 real compute, the default MLP (8 x 512, batch 512); ``transformer``
p = 2 real compute, the built-in transformer (4 layers, d_model 128, seq 32, batch 64);
``unseen`` p = 2, the MLP profiled as it is and run with uneven stages the profile never
saw (``--balance 3,5``, with two chunks ``1,3,2,2``: the profile's stages re-cut layer by
layer, :func:`simulator.profile.recut`); ``shared`` p = 4 real compute on this 2-core
machine (the MLP, a shared node); ``sleep`` p = 4, 20/10/10 ms sleeps.

Two predictions per cell, both made before its timed steps: **raw**, from the profile as
it is (printed for every cell before any cell runs), and **canary**, the same with the
profile's compute costs scaled by the machine's drift since the profile (each run
re-times the canary after its warm-up: ``--costs … --canary``). Per mode and prediction:
median, max and mean error (the mean shows a one-sided bias), per m Kendall tau over the
pairs whose measured step times differ by more than 2 % (closer pairs count as ties),
and whether the predicted best schedule is within 2 % of the measured best; and, from
each run's summary, the median split of the canary prediction's error into op drift,
remainder (host time, links) and model error.

Every cell is run ``--repeats`` times (default 3) in round-robin passes over the whole
mode and its median kept: this machine has slow spells of seconds to minutes (three
runs of one cell lay 14 % apart, median over the cells of the MLP mode, 2026-12-01), and
a slow spell then takes one repeat of the cells it covers, not every repeat of one cell.

Writes ``--csv`` (default out/prediction_accuracy.csv): mode, schedule, chunks, m,
predicted_s (raw), measured_s (the median of the repeats), error_pct (raw), canary_s and
canary_error_pct (the median over the repeats of each run's own canary prediction and
error), drift (the canary's, median over repeats), op_drift_pct, remainder_pct,
model_error_pct (medians over repeats), spread_pct (the repeats' max - min over their
median: the machine's own drift on that cell, a floor under any prediction's error); the
notebook's "measured against predicted" section plots it.
``--work DIR`` keeps the profiles and runs (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import schedules  # noqa: E402
import simulator  # noqa: E402
from executor.launch import launch  # noqa: E402

MICROBATCHES = (4, 8, 16)
TIE = 0.02
UNEVEN = {1: (3, 5), 2: (1, 3, 2, 2)}  # the unseen mode's layers per stage, by chunks (p = 2)
MODES = {  # ranks, model and compute flags
    "mlp": (2, ["--model", "mlp", "--layers", "8", "--width", "512", "--batch", "512"]),
    "unseen": (2, ["--model", "mlp", "--layers", "8", "--width", "512", "--batch", "512"]),
    "transformer": (2, ["--model", "transformer", "--layers", "4", "--width", "128", "--seq-len", "32",
                        "--heads", "4", "--batch", "64"]),
    "shared": (4, ["--model", "mlp", "--layers", "8", "--width", "512", "--batch", "512"]),
    "sleep": (4, ["--compute", "sleep", "--t-f", "20", "--t-i", "10", "--t-w", "10", "--width", "256",
                  "--batch", "256"]),
}


def _chunks(name: str, ranks: int) -> int | None:
    """2 for the schedules that take chunks (looped or V), else the builder's default."""
    try:
        return 2 if schedules.build(name, ranks=ranks, microbatches=ranks * 4, chunks=2).chunks == 2 else None
    except (schedules.ScheduleError, TypeError, ValueError):
        return None


def _cells(ranks: int, names: list[str]) -> list[tuple[str, int | None, int]]:
    cells = []
    for name in names:
        chunks = _chunks(name, ranks)
        for m in MICROBATCHES:
            try:
                schedules.validate(schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks))
            except (schedules.ScheduleError, ValueError):
                continue  # e.g. a schedule that needs m >= p or m divisible by p
            cells.append((name, chunks, m))
    return cells


def _schedule(name: str, ranks: int, m: int, chunks: int | None, profile: simulator.Profile) -> schedules.Schedule:
    """The schedule the executor runs with ``--costs``: one built for costs is built for the
    profile's layout (as :func:`executor.engine.plan.plan` builds it)."""
    if not schedules.spec(name).costed:
        return schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks)
    costs = profile.costs(ranks=ranks, chunks=1, microbatches=m)
    return schedules.build(name, ranks=ranks, microbatches=m, costs=costs.stage_costs(ranks))


def _launch(ranks: int, args: list[str]) -> None:
    done = launch(ranks, args, timeout=900, capture=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, done.args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def kendall(predicted: list[float], measured: list[float]) -> float:
    """Kendall's tau over the pairs measured more than 2 % apart (1.0 when all are ties)."""
    agree = disagree = 0
    for i in range(len(measured)):
        for j in range(i + 1, len(measured)):
            if abs(measured[i] - measured[j]) <= TIE * min(measured[i], measured[j]):
                continue
            same = (predicted[i] - predicted[j]) * (measured[i] - measured[j]) > 0
            agree, disagree = agree + same, disagree + (not same)
    return 1.0 if agree + disagree == 0 else (agree - disagree) / (agree + disagree)


def _balance(mode: str, chunks: int | None) -> tuple[int, ...] | None:
    return UNEVEN[chunks or 1] if mode == "unseen" else None


def run_mode(mode: str, names: list[str], steps: int, work: Path, repeats: int = 1) -> pd.DataFrame:
    ranks, model = MODES[mode]
    folder = work / mode
    print(f"\n== {mode}: p = {ranks}, {' '.join(model)}", flush=True)
    _launch(ranks, ["profile", *model, "--chunks", "1,2", "--microbatches", ",".join(map(str, MICROBATCHES)),
                    "--out", str(folder / "profile"), "--force"])
    profile = simulator.Profile.load(folder / "profile" / "costs.json")
    rows = []
    for name, chunks, m in _cells(ranks, names):
        schedule = _schedule(name, ranks, m, chunks, profile)
        predicted = simulator.simulate(schedule, profile.costs(schedule, layers=_balance(mode, chunks))).makespan
        rows.append({"mode": mode, "schedule": name, "chunks": schedule.chunks, "m": m, "predicted_s": predicted})
        print(f"  predicted before running: {name:18} m={m:<3} {predicted * 1e3:9.2f} ms", flush=True)
    for turn in range(repeats):  # round-robin: a slow spell hits one repeat of many cells, not one cell
        for row in rows:
            got = _measure(ranks, model, row, steps, folder, _balance(mode, row["chunks"]))
            row.setdefault("runs", []).append(got)
            print(f"  ran ({turn + 1}/{repeats}): {row['schedule']:18} m={row['m']:<3} "
                  f"{got['measured_step_time'] * 1e3:9.2f} ms (canary prediction {got['canary_error_pct']:+.2f} %, "
                  f"drift x{got['canary_drift']:.3f})", flush=True)
    for row in rows:
        runs = row.pop("runs")
        steps_s = [r["measured_step_time"] for r in runs]
        row["measured_s"] = statistics.median(steps_s)
        row["error_pct"] = 100.0 * (row["predicted_s"] - row["measured_s"]) / row["measured_s"]
        row["canary_s"] = statistics.median(r["canary_predicted_step_time"] for r in runs)
        row["canary_error_pct"] = statistics.median(r["canary_error_pct"] for r in runs)
        row["drift"] = statistics.median(r["canary_drift"] for r in runs)
        for key in ("op_drift_pct", "remainder_pct", "model_error_pct"):
            row[key] = statistics.median(r["error_split"][key] for r in runs)
        row["spread_pct"] = 100.0 * (max(steps_s) - min(steps_s)) / row["measured_s"]
        print(f"  {row['schedule']:18} m={row['m']:<3} measured {row['measured_s'] * 1e3:9.2f} ms "
              f"(median of {' '.join(f'{r * 1e3:.2f}' for r in steps_s)}), predicted {row['predicted_s'] * 1e3:9.2f} ms "
              f"raw ({row['error_pct']:+6.2f} %), canary {row['canary_error_pct']:+6.2f} %", flush=True)
    return pd.DataFrame(rows)


def _measure(ranks: int, model: list[str], row: dict, steps: int, folder: Path,
             balance: tuple[int, ...] | None) -> dict:
    """Run one cell with the profile's prediction (canary-scaled); its summary.json."""
    out = folder / f"{row['schedule']}-m{row['m']}"
    args = ["--schedule", row["schedule"], "--microbatches", str(row["m"]), *model, "--steps", str(steps),
            "--warmup", "3", "--costs", str(folder / "profile" / "costs.json"), "--canary", "--out", str(out),
            "--force"]
    if row["chunks"] > 1:
        args += ["--chunks", str(row["chunks"])]
    if balance:
        args += ["--balance", ",".join(map(str, balance))]
    _launch(ranks, args)
    return json.loads((out / "summary.json").read_text())


def report(table: pd.DataFrame) -> None:
    for mode, cells in table.groupby("mode", sort=False):
        for which, pred, err in (("raw", "predicted_s", "error_pct"), ("canary", "canary_s", "canary_error_pct")):
            errors = cells[err]
            taus, best = [], []
            for m, at in cells.groupby("m"):
                taus.append(kendall(at[pred].tolist(), at["measured_s"].tolist()))
                pick = at.loc[at[pred].idxmin()]
                best.append(100.0 * (pick["measured_s"] / at["measured_s"].min() - 1))
                print(f"  {mode} {which} m={m}: predicted order {' < '.join(at.sort_values(pred)['schedule'])}; "
                      f"measured {' < '.join(at.sort_values('measured_s')['schedule'])}; tau {taus[-1]:.2f}")
            print(f"{mode} {which}: median |error| {errors.abs().median():.2f} %, max |error| {errors.abs().max():.2f} %, "
                  f"mean error {errors.mean():+.2f} %, tau per m {', '.join(f'{t:.2f}' for t in taus)}, predicted "
                  f"best is {', '.join(f'{b:.1f}' for b in best)} % over the measured best per m")
        print(f"{mode}: canary drift {cells['drift'].min():.3f}-{cells['drift'].max():.3f}; the canary prediction's "
              f"error split (medians over cells): op drift {cells['op_drift_pct'].median():+.2f} %, remainder "
              f"{cells['remainder_pct'].median():+.2f} %, model error {cells['model_error_pct'].median():+.2f} %")
        spread = cells["spread_pct"]
        print(f"{mode}: the repeats of one cell spread {spread.median():.2f} % (median over cells), "
              f"at most {spread.max():.2f} %: this machine's own drift, a floor under any prediction")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--schedules", default="all", help="comma-separated built-in names (default all)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default %(default)s)")
    parser.add_argument("--csv", default="out/prediction_accuracy.csv", help="where the matrix goes")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per cell, in round-robin passes; the median is kept (default %(default)s)")
    parser.add_argument("--work", help="keep the profiles and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    names = schedules.names() if args.schedules == "all" else args.schedules.split(",")
    bad = [m for m in modes if m not in MODES] + [n for n in names if n not in schedules.names()]
    if bad:
        parser.error(f"unknown mode or schedule: {', '.join(bad)}")
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        table = pd.concat([run_mode(mode, names, args.steps, work, args.repeats) for mode in modes],
                          ignore_index=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    print()
    report(table)
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
