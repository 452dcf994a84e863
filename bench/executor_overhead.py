"""What the executor does to the ops it times, and to the step: inflation, overhead, overlap.

    .venv/bin/python bench/executor_overhead.py [--steps 10] [--runs 3] [--policies idle,hooks,thread,mpich]
        [--balance 3,5]

For each progress policy (default: the executor's default only), ``--runs`` repetitions of:

* **against a plain process** (the yardstick): the same stages timed in a process of
  their own, bare layers, no hooks, no meter, no MPI (``python -m
  executor.record.plain``), then straight after it 1F1B and ZB-H1 at p = 2 on the default
  MLP (8 x 512, batch 512, m = 8, 1 thread a rank); per stage and kind (F, B from 1F1B; I,
  W from ZB-H1), the in-run median over the plain process's median.
* **inflation**: the same runs with ``--inflation``: every op of every stage is also timed
  alone inside the run (the bare layers, the other rank asleep); per stage and kind, the
  in-run median over the alone median. Also the **overhead**: measured step over the
  simulator's prediction from the ops alone (with the run's fitted link and optimizer time).
* **async against blocking** on the same model (1F1B), step times;
* **overlap**: GPipe with 16 MiB activations beside 10/5/5 ms sleeps (the large-activation
  case of the MPI tests), async step over blocking step.

Printed: a table per policy (medians over the runs, each ratio taken within one run),
and one summary line per policy for docs/results.md's table. Run it on a quiet machine: it
launches 4 jobs per run and policy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from executor.launch import launch  # noqa: E402
from executor.transport.progress import POLICIES  # noqa: E402

MLP = ["--model", "mlp", "--layers", "8", "--width", "512", "--batch", "512", "--microbatches", "8", "--threads", "1"]
LARGE = ["--schedule", "gpipe", "--microbatches", "8", "--compute", "sleep", "--t-f", "10", "--t-i", "5", "--t-w", "5",
         "--width", "2048", "--batch", "16384"]


def _run(args: list[str], out: Path) -> dict:
    done = launch(2, [*args, "--out", str(out)], timeout=600, capture=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"executor failed ({' '.join(args)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def _plain(model: list[str]) -> list[dict]:
    """Per stage, {kind: median s} of the MLP's stages in a plain process (no MPI)."""
    done = subprocess.run([sys.executable, "-m", "executor.record.plain", "--ranks", "2", *model], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise SystemExit(f"plain process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)["stages"]


def measure(policy: str, steps: int, work: Path, k: int, model: list[str] = MLP) -> dict:
    timed = ["--steps", str(steps), "--warmup", "3", "--progress", policy]
    plain = _plain(model)
    inflated = _run(["--schedule", "1f1b", *model, *timed, "--inflation"], work / f"{policy}-{k}-inflation")
    split = _run(["--schedule", "zb-h1", *model, *timed, "--inflation"], work / f"{policy}-{k}-split")
    vs_plain = {(r["rank"], r["stage"], r["kind"]): r["run_s"] / plain[r["stage"]][r["kind"]]
                for summary, kinds in ((inflated, "FB"), (split, "IW")) for r in summary["op_inflation"]
                if r["kind"] in kinds}
    blocking = _run(["--schedule", "1f1b", *model, *timed, "--comm", "blocking"], work / f"{policy}-{k}-blocking")
    sleep = ["--steps", str(max(3, steps // 3)), "--warmup", "1", "--progress", policy]
    big_async = _run([*LARGE, *sleep], work / f"{policy}-{k}-large-async")
    big_blocking = _run([*LARGE, *sleep, "--comm", "blocking"], work / f"{policy}-{k}-large-blocking")
    return {
        "plain": vs_plain,
        "ops": {(r["rank"], r["stage"], r["kind"]): r["ratio"] for summary, kinds in ((inflated, "FB"), (split, "IW"))
                for r in summary["op_inflation"] if r["kind"] in kinds},
        "step_ms": inflated["measured_step_time"] * 1e3,
        "overhead": inflated["overhead"],
        "blocking_ms": blocking["measured_step_time"] * 1e3,
        "async_over_blocking": inflated["measured_step_time"] / blocking["measured_step_time"],
        "overlap": big_async["measured_step_time"] / big_blocking["measured_step_time"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default %(default)s, at least 10)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are printed (default %(default)s)")
    parser.add_argument("--policies", default="idle", help=f"comma-separated, of {', '.join(POLICIES)}")
    parser.add_argument("--balance", help="layers per stage, e.g. 3,5 (default: the model's even split)")
    args = parser.parse_args(argv)
    policies = args.policies.split(",")
    if any(p not in POLICIES for p in policies) or args.steps < 10 or args.runs < 1:
        parser.error(f"--policies from {', '.join(POLICIES)}; --steps >= 10; --runs >= 1")
    model = [*MLP, "--balance", args.balance] if args.balance else MLP
    split = f", layers {args.balance}" if args.balance else ""
    print(f"p = 2, default MLP (8 x 512{split}, batch 512, m = 8, 1 thread a rank); {args.runs} runs of "
          f"{args.steps} timed steps; medians over runs of ratios taken within one run")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            runs = [measure(policy, args.steps, Path(tmp), k, model) for k in range(args.runs)]
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key not in ("ops", "plain")}
            worst = {}
            for what, title in (("plain", "a plain process (bare layers, no MPI)"), ("ops", "alone inside the run")):
                ops = defaultdict(list)
                for r in runs:
                    for key, ratio in r[what].items():
                        ops[key].append(ratio)
                print(f"\nprogress = {policy}: op time in the run / {title} (median of {args.runs})")
                print(f"  {'rank':>4}{'stage':>6}{'kind':>5}{'ratio':>8}   per run")
                for (rank, stage, kind), values in sorted(ops.items()):
                    print(f"  {rank:>4}{stage:>6}{kind:>5}{statistics.median(values):>8.3f}   "
                          + " ".join(f"{v:.3f}" for v in values))
                worst[what] = max(statistics.median(v) for v in ops.values())
            print(f"  1f1b step {med['step_ms']:.2f} ms async, {med['blocking_ms']:.2f} ms blocking "
                  f"(async/blocking {med['async_over_blocking']:.3f}); overhead over ops-alone prediction "
                  f"{med['overhead']:.3f}; large-activation overlap: async/blocking {med['overlap']:.3f}")
            lines.append(f"| {policy} | {worst['plain']:.3f} | {worst['ops']:.3f} | {med['overlap']:.3f} | "
                         f"{med['step_ms']:.2f} ms | {med['async_over_blocking']:.3f} | {med['overhead']:.3f} |")
    print("\n| policy | worst op, run / plain process | worst op, run / alone | large-activation async/blocking | "
          "1f1b step | async/blocking (MLP) | overhead |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
