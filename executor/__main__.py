"""``mpiexec -n 4 python -m executor --schedule 1f1b --microbatches 8``

Exit codes: 0 done, 1 --check mismatch or a failure on any rank, 2 arguments that cannot
work (one line, on rank 0, before any communication), 3 a rank's watchdog fired (a step
ran past ``--timeout``). An exception on any rank, in any thread, prints the rank and the
traceback and calls ``MPI.COMM_WORLD.Abort``, which ends every rank: an unhandled
exception on one rank would otherwise leave the others waiting forever in a receive.

The arguments are parsed before MPI starts, so that ``--progress mpich`` can switch on
MPICH's asynchronous progress (``MPIR_CVAR_ASYNC_PROGRESS``, read at MPI_Init).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from cliguard import EXIT_INTERRUPT

from .config import UsageError, parse_args, parse_profile_args

__all__ = ["main", "abort_on_failure"]


def _abort(kind, value, tb) -> None:
    from mpi4py import MPI  # imported here: importing it starts MPI, after main() has set its options

    from .engine.watchdog import GRACE_S, abort_job

    rank = MPI.COMM_WORLD.Get_rank()
    if issubclass(kind, KeyboardInterrupt):  # mpiexec passes Ctrl-C to every rank: each ends itself,
        if rank == 0:                        # rank 0 says so, and the job's code is the shell's 130
            sys.stderr.write("executor: interrupted; ending every rank\n")
            sys.stderr.flush()
        else:  # the first rank to exit ends the job: rank 0's line must reach mpiexec first
            time.sleep(GRACE_S)
        os._exit(EXIT_INTERRUPT)  # no MPI_Abort (it prints a line of its own per job)
    text = "".join(traceback.format_exception(kind, value, tb))
    abort_job(f"executor: rank {rank} failed; aborting all ranks\n{text}", 1)


def abort_on_failure() -> None:
    """Make an uncaught exception in any thread end the whole MPI job."""
    sys.excepthook = _abort
    threading.excepthook = lambda args: _abort(args.exc_type, args.exc_value, args.exc_traceback)


BAD_INPUT = (ValueError, KeyError, OSError, OverflowError)
"""What a user's arguments or files can raise while a run is planned: one line, exit 2
(UsageError, ScheduleError and ProfileError are ValueErrors)."""


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if isinstance(err, ValueError) else f"{type(err).__name__}: {line}"


def _refuse_alike(world, error: str | None, prog: str) -> bool:
    """Every rank learns whether any rank refused; rank 0 prints the first reason. True: refused."""
    from mpi4py import MPI

    errors = world.allreduce([error] if error else [], op=MPI.SUM)  # a few short strings
    if errors and world.Get_rank() == 0:
        print(f"{prog}: {errors[0]}", file=sys.stderr)
    return bool(errors)


def _claim_output(cfg, ranks: int):
    """Rank 0's output folder, claimed before any work: a folder the user named must be new
    or empty unless --force; a default one is new (``cliguard.fresh_dir``), with a link
    ``out/run-<schedule>-p<P>-m<M>`` to the newest."""
    from cliguard import claim_dir, fresh_dir

    if cfg.out:
        return claim_dir(cfg.out, force=cfg.force, flag="--out")
    default = cfg.out_dir(ranks)
    return fresh_dir(default.parent, default.name)


def main(argv: list[str] | None = None) -> int:
    abort_on_failure()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["profile"]:
        return _profile(argv[1:])
    error, cfg = None, None
    try:
        cfg = parse_args(argv)
    except UsageError as err:
        error = err
    if cfg is not None and cfg.progress == "mpich":
        os.environ["MPIR_CVAR_ASYNC_PROGRESS"] = "1"
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    out, reason = None, None
    try:
        if error is not None:
            raise error
        from .engine.plan import plan

        the_plan = plan(cfg, world.Get_size())
        if world.Get_rank() == 0 and not cfg.check:  # the one rank that writes
            out = _claim_output(cfg, the_plan.ranks)
    except BAD_INPUT as err:
        reason = _reason(err)
    if _refuse_alike(world, reason, "executor"):
        return 2
    from .engine.steps import execute
    from .results.report import format_inflation, format_table, write_outputs

    result = execute(the_plan, world)
    if world.Get_rank() == 0:
        if result.message:
            print(result.message)
        if result.ok and not cfg.check:
            summary, cmp, failed = write_outputs(result, out, predict=cfg.predict)
            if cmp is not None:
                label = (f"{cfg.schedule_label}: p={the_plan.ranks} m={cfg.microbatches} dp={cfg.dp} "
                         f"comm={cfg.comm_mode} progress={cfg.progress} compute={cfg.compute} "
                         f"({cfg.steps} timed steps, median)")
                print(format_table(label, cmp))
            else:
                print(f"step time {summary['measured_step_time'] * 1e3:.3f} ms (median of {cfg.steps})")
            if "op_inflation" in summary:
                print("op time in the run over the same op timed alone (medians):")
                print(format_inflation(summary["op_inflation"]))
                if "overhead" in summary:
                    print(f"measured step over the simulator's from ops alone: {summary['overhead']:.3f} "
                          f"({summary['predicted_step_time_from_alone'] * 1e3:.3f} ms predicted)")
            if failed:
                for line in failed:
                    print(f"executor: {line}", file=sys.stderr)
                return 1
            print(f"wrote {out}/ (clock alignment within {result.clock_error * 1e6:.1f} us)")
    return 0 if result.ok else 1


def _profile(argv: list[str]) -> int:
    """``python -m executor profile``: see :mod:`executor.results.profile`."""
    from pathlib import Path

    from mpi4py import MPI

    from cliguard import claim_file

    world = MPI.COMM_WORLD
    reason = None
    try:
        cfg, options = parse_profile_args(argv)
        if world.Get_size() % cfg.dp:
            raise UsageError(f"world size {world.Get_size()} is not divisible by --dp {cfg.dp}")
        if cfg.check:
            raise UsageError("profile takes no --check")
        if world.Get_rank() == 0:  # the one rank that writes claims the file before any work
            claim_file(Path(options.out) / "costs.json", force=options.force, flag="--out")
    except BAD_INPUT as err:
        reason = _reason(err)
    if _refuse_alike(world, reason, "executor profile"):
        return 2
    from simulator import Profile  # its summary, the one screen a profile prints

    from .results.profile import plan_layouts, profile

    try:  # every layout is planned (and so checked) on every rank alike before any work
        layouts = plan_layouts(cfg, world, options.chunks, options.microbatches)
    except BAD_INPUT as err:
        reason = _reason(err)
    if _refuse_alike(world, reason, "executor profile"):
        return 2
    began = time.perf_counter()
    doc = profile(cfg, world, Path(options.out), layouts, options.repeats)
    if doc is not None:
        print(Profile(doc, f"{options.out}/costs.json").summary())
        print(f"wrote {options.out}/costs.json in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
