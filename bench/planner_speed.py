"""How fast the planner answers: the GPT-3 search over tp x pp x dp x schedules x chunks x m
x recomputation x sequence parallelism, and the two sizes issue #18 bounds.

Plans GPT-3 175B on 1,024 A100-80GB (8 per node, global batch 1536) as docs/planner.md's
command does, with microbatch sizes 1, 2 and 4 (so three microbatch counts per dp), and
prints the layouts enumerated, the pre-filter's and the simulations' wall time and the
whole plan's (median of --repeat runs, each with cold caches and a new worker pool). Then,
once each, the whole command line for ``--gpus 98304 --global-batch 98304`` (target: an
answer within 60 s) and ``--gpus 1000000000 --global-batch 64`` (target: refused within 1 s).

    python bench/planner_speed.py [--workers 2] [--microbatch-size 1,2,4] [--repeat 3] [--no-cli]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from planner import GPUS, LINKS, MODELS, Machine, PlanConfig, plan  # noqa: E402
from planner import ops, search as search_module, shapes  # noqa: E402
from planner.hardware import GIB  # noqa: E402
from simulator.workers import open_workers  # noqa: E402


def _clear_caches() -> None:
    """Every repeat starts cold: schedules built, dry runs and layer costs computed again."""
    for cached in (shapes.registered, shapes.lowered, shapes.uniform_bubble, shapes.placement, search_module.spec_for,
                   shapes._built_for, ops.layer_times, ops.embedding_times, ops.head_times):
        cached.cache_clear()


def _cli(args: list[str]) -> tuple[float, int, str]:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=ROOT)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return time.perf_counter() - began, proc.returncode, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="processes for the pre-filter and simulations (default 2)")
    ap.add_argument("--microbatch-size", default="1,2,4", help="comma-separated microbatch sizes (default 1,2,4)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median is printed (default 3)")
    ap.add_argument("--no-cli", action="store_true", help="skip the two command lines of issue #18")
    args = ap.parse_args()
    machine = Machine(GPUS["a100-80gb"], 1024, 8, LINKS["nvlink"], LINKS["infiniband"])
    sizes = tuple(int(b) for b in args.microbatch_size.split(","))
    config = PlanConfig(MODELS["gpt3-175b"], machine, 1536, 80 * GIB, microbatch_sizes=sizes,
                        recompute=("none", "selective", "full"))
    walls, pre, sims = [], [], []
    for _ in range(args.repeat):  # a new pool each time: its workers' caches start cold too
        _clear_caches()
        began = time.perf_counter()
        with open_workers(args.workers) as workers:
            found = plan(config, workers)
        walls.append(time.perf_counter() - began)
        pre.append(found.seconds["enumerate"])
        sims.append(found.seconds["simulate"])
    best = found.plans[0]
    print(f"gpt3-175b on 1024 x a100-80gb, global batch 1536, b in {sizes}, {args.workers} workers, "
          f"median of {args.repeat}:")
    print(f"  {len(found.candidates)} layouts (tp x pp x dp x schedule x chunks x m x split x recompute x SP), "
          f"{len(found.fitting)} fit, {len(found.plans)} simulated")
    print(f"  pre-filter   {statistics.median(pre):7.2f} s")
    print(f"  simulation   {statistics.median(sims):7.2f} s")
    print(f"  whole plan   {statistics.median(walls):7.2f} s  (target 30 s; runs {', '.join(f'{w:.1f}' for w in walls)})")
    print(f"  best: {best.layout.label()}: step {best.step_time:.2f} s, {best.tflops_per_gpu:.0f} TFLOP/s per GPU, "
          f"MFU {best.mfu:.1%}, {best.memory.total / GIB:.1f} GiB")
    if not args.no_cli:
        for argv, target in ((["--gpus", "98304", "--global-batch", "98304", "--workers", str(args.workers), "--quiet"], 60),
                             (["--gpus", "1000000000", "--global-batch", "64"], 1)):
            seconds, code, last = _cli(argv)
            print(f"  python -m planner {' '.join(argv)}: {seconds:.1f} s (target {target} s), exit {code}"
                  + (f": {last}" if code else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
