"""Testing aids, kept out of the interpreter's loop: faults a test asks a rank to inject.

* ``--fail-rank R``: rank R's op halfway through its list raises :class:`InjectedFailure`
  instead of running (the whole job must end, with that rank's traceback);
* ``--stall-rank R``: rank R hangs at its first op of the second step it runs (its
  watchdog must end the job, naming that op).

Both replace one entry of the interpreter's program (the list of (op, handler, timed)
it runs), so the loop itself knows nothing of them. :attr:`Interpreter.why` tells the
watchdog a stall was asked for.
"""

from __future__ import annotations

import time

from schedules import Op

from .interpreter import Interpreter

__all__ = ["InjectedFailure", "inject"]


class InjectedFailure(RuntimeError):
    """Raised by --fail-rank to test that a failure ends the whole job."""


def inject(interpreter: Interpreter, fail: bool, stall: bool) -> None:
    """Make this rank fail (``fail``) or stall (``stall``) as the module says."""
    program = interpreter.program
    if fail:
        at = len(program) // 2
        op = program[at][0]

        def failing(_op: Op) -> None:
            raise InjectedFailure(f"injected failure at op {at} ({op}), as asked by --fail-rank")

        program[at] = (op, failing, False)
    if stall:
        op, handler, timed = program[0]

        def stalling(this: Op) -> None:
            if interpreter.steps_run == 1:
                interpreter.why = "stalled on purpose by --stall-rank"
                while True:  # only the watchdog (or a signal) ends this
                    time.sleep(3600)
            handler(this)

        program[0] = (op, stalling, timed)
