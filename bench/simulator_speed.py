"""Time our build + lower + validate + simulate against torch.distributed.pipelining's dry run.

Both sides take the same schedule, interleaved 1F1B (default p = 64, v = 2, m = 512):
  ours:  schedules.build -> schedules.validate (lowering included) -> simulator.simulate
         (a timed SimPy run with compute/communication overlap and memory);
  torch: ScheduleInterleaved1F1B on stand-in stage objects: its schedule generation
         (`_calculate_single_rank_operations` for every rank), its lowering `_add_send_recv`
         and its untimed dry run `_simulate_comms_compute`.
Prints the median wall time of each, op executions per second, and the ratio.

    python bench/simulator_speed.py [--ranks 64 --chunks 2 --microbatches 512 --repeat 5 --torch-repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import schedules  # noqa: E402
import simulator  # noqa: E402


def ours(p: int, v: int, m: int) -> tuple[float, int, float, float]:
    """(seconds, op executions simulated, bubble fraction, seconds in the SimPy model and
    trace alone) of one full run."""
    began = time.perf_counter()
    schedule = schedules.build("interleaved-1f1b", ranks=p, microbatches=m, chunks=v)
    result = simulator.simulate(schedule)  # validates (and lowers) first
    return time.perf_counter() - began, result.events, result.bubble_fraction, result.wall_time


@dataclass
class _StandInStage:
    """What torch's schedule constructor reads off a pipeline stage; no model, no process group."""

    stage_index: int
    num_stages: int
    group_rank: int
    group_size: int
    submod: object = None
    has_backward: bool = True

    @property
    def is_first(self) -> bool:
        return self.stage_index == 0

    @property
    def is_last(self) -> bool:
        return self.stage_index == self.num_stages - 1


def torch_dry_run(p: int, v: int, m: int) -> tuple[float, int, float]:
    """(seconds, actions in the lowered schedule, constructor seconds) of torch's schedule
    generation, its `_add_send_recv` lowering and its `_simulate_comms_compute` dry run.

    The constructor runs the generation and a lowering of its own (with UNSHARD/RESHARD and
    REDUCE_GRAD, which the dry run rejects), so it is timed apart and the measured part
    calls the three pieces directly, each once."""
    from torch.distributed.pipelining.schedules import (
        ScheduleInterleaved1F1B, _add_send_recv, _simulate_comms_compute)

    stages = [_StandInStage(c * p, p * v, 0, p) for c in range(v)]  # rank 0's stages, looping placement
    began = time.perf_counter()
    schedule = ScheduleInterleaved1F1B(stages, n_microbatches=m, loss_fn=lambda out, target: out)
    built = time.perf_counter() - began
    where = schedule.stage_index_to_group_rank
    began = time.perf_counter()
    compute = {rank: schedule._calculate_single_rank_operations(rank) for rank in range(p)}
    lowered = _add_send_recv(compute, stage_to_rank=lambda s: where[s], num_stages=p * v)
    _simulate_comms_compute(lowered, lambda s: where[s], p * v)
    return time.perf_counter() - began, sum(len(a) for a in lowered.values()), built


def _report(label: str, seconds: list[float], count: int, what: str) -> float:
    """Print the median time and the rate; return the median."""
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"{label}: median {median:.3f} s of {len(seconds)} [{runs}], {count} {what}, {count / median:,.0f} {what}/s")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64, help="pipeline ranks p (default %(default)s)")
    parser.add_argument("--chunks", type=int, default=2, help="chunks v (default %(default)s)")
    parser.add_argument("--microbatches", type=int, default=512, help="microbatches m (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of ours (median reported)")
    parser.add_argument("--torch-repeat", type=int, default=1, help="runs of torch's (about 19 s each); 0 skips it")
    args = parser.parse_args()
    p, v, m = args.ranks, args.chunks, args.microbatches
    print(f"interleaved-1f1b p={p} v={v} m={m}: {p * v * m * 2} compute ops")
    runs = [ours(p, v, m) for _ in range(args.repeat)]
    ours_s = _report("ours  (build+lower+validate+simulate)", [r[0] for r in runs], runs[0][1], "op executions")
    print(f"      of which SimPy model + trace: median {statistics.median(r[3] for r in runs):.3f} s; "
          f"bubble fraction {runs[0][2]:.4f}")
    if args.torch_repeat:
        trials = [torch_dry_run(p, v, m) for _ in range(args.torch_repeat)]
        torch_s = _report("torch (generate+_add_send_recv+_simulate_comms_compute)", [t[0] for t in trials],
                          trials[0][1], "actions")
        print(f"      (its constructor, generation + its own lowering, not counted: "
              f"median {statistics.median(t[2] for t in trials):.3f} s)")
        print(f"ratio torch / ours: {torch_s / ours_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
