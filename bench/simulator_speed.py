"""Time the simulator's whole CLI, with links, memory and node sharing on, against
torch.distributed.pipelining's dry run, in one run.

Both sides take the same schedule, interleaved 1F1B (default p = 64, v = 2, m = 512):
  ours:  ``python -m simulator --schedule interleaved-1f1b ... COSTS`` as a fresh process
         (imports, schedules.build, schedules.validate with lowering and dry run, the SimPy
         model with links, activation memory and ranks sharing nodes, the printed table),
         and, in this process, the same run split into its phases (CPU seconds);
  torch: ScheduleInterleaved1F1B on stand-in stage objects: its schedule generation
         (`_calculate_single_rank_operations` for every rank), its lowering `_add_send_recv`
         and its untimed dry run `_simulate_comms_compute`.
COSTS (printed with the figures): 16 MiB activations over 12.5 GB/s links with 10 us
latency; 320 MB activation memory per microbatch-stage; 8 ranks a node, each rank at
1.00, 0.99, ... 0.93 of its speed as 1 .. 8 of them compute. ``--interference 0.15`` also
slows compute 15% while the rank's own transfers fly (Calculon's figure for NVLink);
``--free`` drops every cost but unit compute. Prints medians, the ratio ours / torch
(target <= 0.05) and CPU seconds beside wall seconds, since a busy machine stretches wall
time.

    python bench/simulator_speed.py [--ranks 64 --chunks 2 --microbatches 512 --repeat 5 --torch-repeat 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import schedules  # noqa: E402
import simulator  # noqa: E402
from cliguard import Parser  # noqa: E402
from simulator.flags import add_cost_flags, costs_from_args  # noqa: E402

COSTS = ["--act-bytes", "16777216", "--bandwidth", "12.5e9", "--latency", "1e-5", "--act-memory", "3.2e8",
         "--ranks-per-node", "8", "--share", "1,0.99,0.98,0.97,0.96,0.95,0.94,0.93"]


def cli(p: int, v: int, m: int, costs: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of the whole CLI in a fresh process."""
    args = [sys.executable, "-m", "simulator", "--schedule", "interleaved-1f1b", "--ranks", str(p),
            "--chunks", str(v), "--microbatches", str(m), *costs]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def phases(p: int, v: int, m: int, costs: list[str]) -> dict[str, float]:
    """CPU seconds of build, validate (checks, lowering and dry run) and simulate (of the
    Lowered that validate returned, so nothing is validated twice; the CLI validates once,
    inside simulate)."""
    parser = Parser()
    add_cost_flags(parser)
    args = parser.parse_args(costs)
    clock = time.process_time
    t0 = clock()
    schedule = schedules.build("interleaved-1f1b", ranks=p, microbatches=m, chunks=v)
    t1 = clock()
    lowered = schedules.validate(schedule, "async")
    t2 = clock()
    result = simulator.simulate(lowered, costs_from_args(args)(schedule))
    t3 = clock()
    return {"build": t1 - t0, "validate": t2 - t1, "simulate": t3 - t2, "model+trace (wall)": result.wall_time,
            "events": result.events, "bubble": result.bubble_fraction}


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


def torch_dry_run(p: int, v: int, m: int) -> tuple[float, int, float, float]:
    """(seconds, actions in the lowered schedule, constructor seconds, CPU seconds) of torch's schedule
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
    began, cpu = time.perf_counter(), time.process_time()
    compute = {rank: schedule._calculate_single_rank_operations(rank) for rank in range(p)}
    with_comms = _add_send_recv(compute, stage_to_rank=lambda s: where[s], num_stages=p * v)
    _simulate_comms_compute(with_comms, lambda s: where[s], p * v)
    return time.perf_counter() - began, sum(len(a) for a in with_comms.values()), built, time.process_time() - cpu


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
    parser.add_argument("--free", action="store_true", help="free communication, no memory or sharing costs")
    parser.add_argument("--interference", type=float, default=0.0,
                        help="add --comm-interference F to COSTS (default: none)")
    args = parser.parse_args()
    p, v, m = args.ranks, args.chunks, args.microbatches
    costs = [] if args.free else COSTS + (["--comm-interference", str(args.interference)] if args.interference else [])
    print(f"interleaved-1f1b p={p} v={v} m={m}: {p * v * m * 2} compute ops; costs: {' '.join(costs) or 'defaults'}")
    split = phases(p, v, m, costs)
    print("      in-process CPU s: " + ", ".join(f"{k} {split[k]:.3f}" for k in ("build", "validate", "simulate",
          "model+trace (wall)")) + f"; bubble fraction {split['bubble']:.4f}")
    runs = [cli(p, v, m, costs) for _ in range(args.repeat)]
    ours_s = _report("ours  (python -m simulator, whole CLI, wall)", [r[0] for r in runs], split["events"],
                     "op executions")
    ours_cpu = statistics.median(r[1] for r in runs)
    print(f"      CPU: median {ours_cpu:.3f} s")
    if args.torch_repeat:
        trials = [torch_dry_run(p, v, m) for _ in range(args.torch_repeat)]
        torch_s = _report("torch (generate+_add_send_recv+_simulate_comms_compute)", [t[0] for t in trials],
                          trials[0][1], "actions")
        print(f"      (its constructor, generation + its own lowering, not counted: "
              f"median {statistics.median(t[2] for t in trials):.3f} s)")
        torch_cpu = statistics.median(t[3] for t in trials)
        print(f"      CPU: median {torch_cpu:.3f} s")
        print(f"ratio ours / torch (target <= 0.05): wall {ours_s / torch_s:.3f}, CPU {ours_cpu / torch_cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
