"""A per-rank watchdog: a step that runs past its time limit ends the whole job.

A daemon thread sleeps on a condition (no polling) until the armed deadline. If the step
has not finished by then, it prints which op the rank is stuck on (and, for a RECV, the
rank it is waiting for) and calls ``MPI.COMM_WORLD.Abort``, which ends every rank with
a non-zero exit code. The limit is ``--timeout`` when given. Otherwise it is armed from
the first step: ``FIRST_FACTOR`` x the step the simulator predicts before any step ran
(from the profile with ``--costs``, else from one F and B of every stage timed on the
spot, or the sleeps of ``--compute sleep``), at least ``FIRST_FLOOR_S`` (a first step
allocates and warms caches); once the warm-up has run, ``FACTOR`` x the step predicted
from the warm-up's own op costs, at least ``FLOOR_S`` (a loaded machine's hiccup is not
a hang). Without warm-up (``--warmup 0``, ``--check``) the first limit stays.
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from ..transport.background import Background

__all__ = ["Watchdog", "abort_job", "FIRST_STEPS_S", "FIRST_FACTOR", "FIRST_FLOOR_S", "FACTOR", "FLOOR_S", "GRACE_S"]

FIRST_STEPS_S = 300.0  # before the first limit is worked out (start-up)
FIRST_FACTOR = 20.0
FIRST_FLOOR_S = 20.0
FACTOR = 10.0
FLOOR_S = 5.0
GRACE_S = 1.0


def abort_job(message: str, code: int) -> None:
    """Print ``message`` and end every rank with exit ``code``.

    A rank's stderr reaches mpiexec through hydra's proxy, on a channel apart from the
    abort itself; an immediate ``Abort`` can overtake the message, and mpiexec then exits
    without it (1 run in 20 on a loaded 2-core machine). ``GRACE_S`` lets it through first.
    """
    sys.stderr.write(message)
    sys.stderr.flush()
    time.sleep(GRACE_S)
    MPI.COMM_WORLD.Abort(code)


class Watchdog(Background):
    def __init__(self, interpreter, world_rank: int, limit: float = FIRST_STEPS_S):
        super().__init__("watchdog")
        self.interpreter, self.world_rank, self.limit = interpreter, world_rank, limit
        self._deadline: float | None = None
        self._step = -1
        self._start()

    def arm(self, step: int) -> None:
        with self._cond:
            self._step, self._deadline = step, time.monotonic() + self.limit
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def _loop(self) -> None:
        with self._cond:
            while self._running:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._expire()
                return  # one report: Abort is ending the job

    def _expire(self) -> None:
        it = self.interpreter
        i = it.position
        if 0 <= i < len(it.ops):
            op = it.ops[i]
            where = f"op {i} ({op})"
            peer = it.links.waiting_for(op)
            if it.why:
                where += f", {it.why}"
            elif peer is not None:
                where += f", waiting for pipeline rank {peer}"
        else:
            where = "outside the op list (start of step, barrier, or end-of-step completion)"
        abort_job(f"executor: rank {self.world_rank} timed out: step {self._step} ran past "
                  f"{self.limit:.3g} s, stuck at {where}; aborting all ranks\n", 3)
