"""Out-of-sample prediction: calibrate once, predict other schedules and microbatch counts
before running them, then run them and compare.

    .venv/bin/python bench/prediction_accuracy.py              # sleep (p = 4) and real (p = 2)
    .venv/bin/python bench/prediction_accuracy.py --modes sleep

Per mode: run zb-h1 at m = 4 (it measures I and W apart), calibrate
``simulator.Costs.from_trace`` from its timed steps, simulate gpipe, 1f1b and zb-h1 at
m = 8 and 16 over the same stages, print the predictions, then run each cell under
mpiexec and print predicted, measured and error % per cell. The microbatch size is kept
fixed (the batch grows with m), so per-op costs carry over from the calibration run; a
full backward B is predicted as t_i + t_w.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simulator  # noqa: E402
from executor.config import parse_args  # noqa: E402
from executor.launch import launch  # noqa: E402
from executor.record.predict import calibrate  # noqa: E402
from executor.engine.plan import plan  # noqa: E402

MODES = {
    # ranks, flags; rows per microbatch fixed by --batch = rows * m
    "sleep": (4, ["--compute", "sleep", "--t-f", "20", "--t-i", "10", "--t-w", "10", "--width", "256"], 8),
    "real": (2, ["--compute", "real", "--model", "mlp", "--layers", "8", "--width", "512"], 64),
}
CELLS = [(name, m) for name in ("gpipe", "1f1b", "zb-h1") for m in (8, 16)]


def flags(mode: str, schedule: str, m: int, out: Path) -> list[str]:
    _, extra, rows = MODES[mode]
    return ["--schedule", schedule, "--microbatches", str(m), "--batch", str(rows * m), "--steps", "5",
            "--warmup", "2", "--out", str(out), *extra]


def run_cell(mode: str, schedule: str, m: int, out: Path) -> dict:
    """Run one cell under mpiexec; its summary.json."""
    done = launch(MODES[mode][0], flags(mode, schedule, m, out), timeout=600, capture=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(done.args)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads((out / "summary.json").read_text())


def predict(mode: str, costs: simulator.Costs, schedule: str, m: int, work: Path) -> float:
    ranks = MODES[mode][0]
    the_plan = plan(parse_args(flags(mode, schedule, m, work)), ranks)  # no MPI: shapes only
    return simulator.simulate(the_plan.schedule, costs, comm="async").makespan


def run_mode(mode: str, work: Path) -> pd.DataFrame:
    ranks = MODES[mode][0]
    base = work / f"{mode}-calibrate"
    summary = run_cell(mode, "zb-h1", 4, base)
    trace = pd.read_csv(base / "trace_steps.csv")
    the_plan = plan(parse_args(flags(mode, "zb-h1", 4, base)), ranks)
    costs = calibrate(the_plan, trace)
    print(f"\n[{mode}] calibrated on zb-h1 p={ranks} m=4 (measured {summary['measured_step_time'] * 1e3:.2f} ms): "
          f"t_f={_ms(costs.t_f)} t_i={_ms(costs.t_i)} t_w={_ms(costs.t_w)} latency={costs.latency * 1e3:.3f} ms")
    predicted = {(s, m): predict(mode, costs, s, m, work / "plan") for s, m in CELLS}
    for (s, m), value in predicted.items():
        print(f"[{mode}] predicted before running: {s:6} m={m:<3} {value * 1e3:9.2f} ms")
    rows = []
    for s, m in CELLS:
        measured = run_cell(mode, s, m, work / f"{mode}-{s}-m{m}")["measured_step_time"]
        error = 100 * (predicted[s, m] - measured) / measured
        rows.append({"mode": mode, "ranks": ranks, "schedule": s, "m": m, "predicted_ms": predicted[s, m] * 1e3,
                     "measured_ms": measured * 1e3, "error_pct": error})
    return pd.DataFrame(rows)


def _ms(values) -> str:
    values = values if isinstance(values, (list, tuple)) else [values]
    return "[" + ", ".join(f"{v * 1e3:.2f}" for v in values) + "] ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="sleep,real", help="comma-separated: sleep, real")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if any(mode not in MODES for mode in modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    with tempfile.TemporaryDirectory() as tmp:
        table = pd.concat([run_mode(mode, Path(tmp)) for mode in modes], ignore_index=True)
    print("\nout-of-sample prediction (calibrated on zb-h1 m=4, async):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"mean |error| {table['error_pct'].abs().mean():.2f} %, max |error| {table['error_pct'].abs().max():.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
