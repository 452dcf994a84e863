"""SimPy discrete-event simulator of pipeline schedules (see issue: Simulator)."""

from .trace import STREAMS, TRACE_COLUMNS, check_trace, stream_of

__all__ = ["TRACE_COLUMNS", "STREAMS", "check_trace", "stream_of"]
