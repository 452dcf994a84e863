"""The one timeline schema of predicted and measured runs, shared by both interpreters.

The simulator writes it (:mod:`simulator`), the executor measures it (:mod:`executor`),
and every plot, table and calibration reads it; it imports nothing else of ours.
:mod:`timeline.gantt` draws any trace (``plot_gantt``, ``plot_compare``) and
:mod:`timeline.perfetto` writes it as Trace Event JSON; both load on demand (matplotlib
takes about a second to import).
"""

from .schema import STREAMS, TRACE_COLUMNS, bubble_of, check_trace, empty_trace, makespan_of, stream_of, transfers

__all__ = ["TRACE_COLUMNS", "STREAMS", "stream_of", "empty_trace", "check_trace", "makespan_of", "bubble_of",
           "transfers"]
