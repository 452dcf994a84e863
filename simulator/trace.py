"""The trace schema now lives in :mod:`timeline`, shared by the simulator and the executor."""

from timeline.schema import *  # noqa: F401,F403
from timeline.schema import __all__  # noqa: F401
