"""How fast the planner answers: layouts per second through the pre-filter, and simulations per second.

Plans GPT-3 175B on 1,024 A100-80GB (8 per node, global batch 1536) as the README's
command does, then prints the layouts enumerated and evaluated (memory + closed form)
per second, the SimPy simulations per second and the wall time of the whole plan.

    python bench/planner_speed.py [--workers 2] [--microbatch-size 1,2,4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from planner import GPUS, LINKS, MODELS, DEFAULT_EFFICIENCY, Machine, PlanConfig, plan  # noqa: E402
from planner.hardware import GIB  # noqa: E402
from planner import search as search_module  # noqa: E402
from simulator.workers import open_workers  # noqa: E402


def _clear_caches() -> None:
    """Every repeat starts cold: schedules are built and shape bubbles simulated again."""
    for cached in (search_module._schedule, search_module._uniform_bubble, search_module.spec_for):
        cached.cache_clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="processes for the simulations (default 2)")
    ap.add_argument("--microbatch-size", default="1", help="comma-separated microbatch sizes (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median is printed (default 3)")
    args = ap.parse_args()
    machine = Machine(GPUS["a100-80gb"], 1024, 8, LINKS["nvlink"], LINKS["infiniband"], DEFAULT_EFFICIENCY)
    sizes = tuple(int(b) for b in args.microbatch_size.split(","))
    config = PlanConfig(MODELS["gpt3-175b"], machine, 1536, 80 * GIB, microbatch_sizes=sizes)
    walls, pre, sims = [], [], []
    with open_workers(args.workers) as workers:
        for _ in range(args.repeat):
            _clear_caches()
            began = time.perf_counter()
            found = plan(config, workers)
            walls.append(time.perf_counter() - began)
            pre.append(len(found.candidates) / found.seconds["enumerate"])
            sims.append(len(found.plans) / found.seconds["simulate"])
    best = found.plans[0]
    print(f"gpt3-175b on 1024 x a100-80gb, b in {sizes}, {args.workers} workers, median of {args.repeat}:")
    print(f"  {len(found.candidates)} layouts, {len(found.fitting)} fit, {len(found.plans)} simulated")
    print(f"  pre-filter   {statistics.median(pre):8.1f} layouts/s")
    print(f"  simulation   {statistics.median(sims):8.1f} layouts/s")
    print(f"  whole plan   {statistics.median(walls):8.2f} s  ({len(found.candidates) / statistics.median(walls):.1f} layouts/s)")
    print(f"  best: {best.layout.label()}: step {best.step_time:.2f} s, bubble {best.bubble_fraction:.1%}, "
          f"{best.memory.total / GIB:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
