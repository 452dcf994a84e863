"""What every pipebubble command line does at its edges, written once.

Three rules from the README's contract live here:

* **Outputs are claimed before any work starts.** :func:`claim_file` and
  :func:`claim_dir` check that a path can be written (by writing a probe, which is the
  only test that also holds for root, read-only mounts and ``/proc``), and refuse to
  replace what is there unless ``--force`` is given. A default output (one the user did
  not name) goes into a new folder of its own, :func:`fresh_dir`, with a ``latest`` link
  beside it, so nothing is ever overwritten without ``--force``. :func:`save_all` writes
  the outputs at the end, each through a temporary file renamed into place (a failed
  write leaves no half file and keeps what was there); one that still fails goes to a
  fresh temporary folder, the others are written anyway, and the error says where each went.
* **Sizes are checked against the machine.** :func:`memory_available` is what this
  process may still allocate, :func:`usable_cores` the cores it may run on; the bounds
  themselves (bytes per op, per trace row, ...) are measured where the ops are made.
* **One error path.** :func:`run_cli` turns :class:`UsageError` (and the errors a
  user's own file or flag can cause: ``OSError``, ``OverflowError``, ``MemoryError``)
  into one line on stderr and an exit code: 2 for bad input, 1 for a failure while
  running, 130 for Ctrl-C, 141 (silently) when stdout is closed early (``| head``). A
  loader turns a ``KeyError`` of a user's file into a ``ValueError`` naming the file and
  the field, since a ``KeyError`` anywhere else is a bug and keeps its traceback. :class:`Parser` is argparse reporting through the same path, and it
  refuses a flag given twice (``--ranks 4 --ranks 8``: which one was meant?).

Its modules: :mod:`~cliguard.errors` (exit codes, the errors a user can cause),
:mod:`~cliguard.outputs` (claiming and saving), :mod:`~cliguard.machine` (memory, cores,
inputs sized against them), :mod:`~cliguard.cli` (argparse, ``main``). This package imports
nothing of ours, so every other package may use it.
"""

from __future__ import annotations

from .cli import Parser, launch, run_cli
from .errors import EXIT_FAILURE, EXIT_INTERRUPT, EXIT_PIPE, EXIT_USAGE, SaveError, UsageError, first_line
from .machine import memory_available, read_input, short_number, too_large, usable_cores
from .outputs import claim_dir, claim_file, fresh_dir, save_all

__all__ = ["UsageError", "claim_file", "claim_dir", "fresh_dir", "run_cli", "first_line", "Parser", "save_all",
           "SaveError", "memory_available", "usable_cores", "too_large", "read_input", "short_number", "launch", "EXIT_USAGE", "EXIT_FAILURE",
           "EXIT_INTERRUPT"]
