"""SimPy discrete-event simulator of pipeline schedules: step time, bubbles, memory, timelines.

    >>> import schedules, simulator
    >>> result = simulator.simulate(schedules.build("1f1b", ranks=4, microbatches=8))
    >>> round(result.bubble_fraction, 4)   # (p - 1) / (m + p - 1)
    0.2727

The simulator and the executor are two interpreters of the same lowered op lists
(:mod:`schedules`), and write traces in the one schema of :mod:`timeline`.
"""

from .costs import Costs
from .fit import LinkFit, fit_link
from .memory import PeakMemory, memory_timeline, peak_memory
from .profile import Profile, ProfileError
from .result import SimResult, simulate

__all__ = [
    "simulate", "SimResult", "Costs", "Profile", "ProfileError", "fit_link", "LinkFit", "PeakMemory", "memory_timeline", "peak_memory",
    "plot_gantt", "plot_compare", "to_chrome_trace",
    "TRACE_COLUMNS", "STREAMS", "check_trace", "empty_trace", "stream_of", "makespan_of", "bubble_of", "transfers",
]


_SCHEMA = ("TRACE_COLUMNS", "STREAMS", "check_trace", "empty_trace", "stream_of", "makespan_of", "bubble_of",
           "transfers")


def __getattr__(name: str):
    # The trace schema loads pandas (a third of a second) and plotting matplotlib (about a
    # second): load them only when asked for, so that a run from the command line needs neither.
    if name in _SCHEMA:
        import timeline

        return getattr(timeline, name)
    if name in ("plot_gantt", "plot_compare"):
        from timeline import gantt

        return getattr(gantt, name)
    if name == "to_chrome_trace":
        from .chrome import to_chrome_trace

        return to_chrome_trace
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")
