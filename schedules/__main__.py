"""Entry point of ``python -m schedules``; see :mod:`schedules.cli`."""

import sys

from cliguard import launch

if __name__ == "__main__":
    sys.exit(launch("python -m schedules", "schedules.cli"))
