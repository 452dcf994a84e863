"""Entry point of ``python -m schedules``; see :mod:`schedules.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
