"""``mpiexec -n 4 python -m executor --schedule 1f1b --microbatches 8``

Exit codes: 0 done, 1 --check mismatch or a failure on any rank, 2 arguments that cannot
work (one line, on rank 0, before any communication). An exception on any rank, in the
main thread or the progress thread, prints the rank and the traceback and calls
``MPI.COMM_WORLD.Abort``, which ends every rank: an unhandled exception on one rank
would otherwise leave the others waiting forever in a receive.
"""

from __future__ import annotations

import sys
import threading
import traceback

from mpi4py import MPI
from schedules import ScheduleError

from .config import UsageError, parse_args

__all__ = ["main", "abort_on_failure"]


def _abort(kind, value, tb) -> None:
    rank = MPI.COMM_WORLD.Get_rank()
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(f"executor: rank {rank} failed; aborting all ranks\n{text}")
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(1)


def abort_on_failure() -> None:
    """Make an uncaught exception in any thread end the whole MPI job."""
    sys.excepthook = _abort
    threading.excepthook = lambda args: _abort(args.exc_type, args.exc_value, args.exc_traceback)


def main(argv: list[str] | None = None) -> int:
    abort_on_failure()
    world = MPI.COMM_WORLD
    try:
        cfg = parse_args(argv)
        from .engine.plan import plan

        the_plan = plan(cfg, world.Get_size())
    except (UsageError, ScheduleError) as err:
        if world.Get_rank() == 0:  # every rank refuses alike; one of them says why
            print(f"executor: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    from .record.report import format_table, write_outputs
    from .engine.steps import execute

    result = execute(the_plan, world)
    if world.Get_rank() == 0:
        if result.message:
            print(result.message)
        if result.ok and not cfg.check:
            out = cfg.out_dir(the_plan.ranks)
            summary, cmp = write_outputs(result, out, predict=cfg.predict)
            if cmp is not None:
                label = (f"{cfg.schedule_label}: p={the_plan.ranks} m={cfg.microbatches} dp={cfg.dp} "
                         f"comm={cfg.comm} compute={cfg.compute} ({cfg.steps} timed steps, median)")
                print(format_table(label, cmp))
            else:
                print(f"step time {summary['measured_step_time'] * 1e3:.3f} ms (median of {cfg.steps})")
            print(f"wrote {out}/ (clock alignment within {result.clock_error * 1e6:.1f} us)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
