"""argparse and ``main`` going through the one error path."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Sequence

from .errors import UsageError, first_line, EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPT, EXIT_PIPE


class _StoreOnce(argparse.Action):
    """argparse's plain ``store``, refusing a second occurrence of the same flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(parser, "given", None) if option_string is not None else None  # flags only
        if given is not None and self.dest in given:
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]!r}, then {values!r}); give it once")
        if given is not None:
            given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (one line through :func:`run_cli`),
    that refuses a value flag given twice, and that records in :attr:`given` the value
    flags the user wrote (``dest -> value``; not positionals, not ``store_true``), so that
    a command can refuse a flag another input overrides instead of ignoring it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self.given: dict[str, object] = {}

    def parse_known_args(self, args=None, namespace=None):
        self.given = {}
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def run_cli(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None, *,
            name_errors: bool = True) -> int:
    """Run a command's ``body(argv)`` and turn the errors a user can cause into one line,
    ``{prog}: error: ...`` (``error: ...`` without ``name_errors``).

    Exit codes: what ``body`` returns; 2 for :class:`UsageError` and any other
    ``ValueError`` (bad input); 1 for ``OSError``, ``MemoryError`` and ``OverflowError``
    raised while running; 130 for Ctrl-C; 141, silently, when stdout was closed before
    the output was all written. An exception of any other type is a bug, or a user's own
    code raising: its traceback is kept.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = f"{prog}: error: " if name_errors else "error: "
    try:
        return body(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_PIPE
    except ValueError as err:  # UsageError, ScheduleError and the like
        print(f"{lead}{first_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, MemoryError, OverflowError) as err:
        print(f"{lead}{type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return EXIT_FAILURE


def _drop_stdout() -> None:
    """The reader went away: point stdout at /dev/null so the exit's flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def launch(prog: str, module: str) -> int:
    """What a ``__main__.py`` runs: import ``module`` and return its ``main()``. A Ctrl-C
    while the modules load (a second or more with torch or pandas) is one line and 130
    as well, not a traceback."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    return main()
