"""Entry point of ``python -m planner``; see :mod:`planner.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
