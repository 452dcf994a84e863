"""``python -m simulator``: see :mod:`simulator.cli`."""

import sys

from cliguard import launch

if __name__ == "__main__":
    sys.exit(launch("python -m simulator", "simulator.cli"))
