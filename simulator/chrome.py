"""Trace Event JSON for Perfetto UI and chrome://tracing.

Format (Trace Event Format, Google): ``{"traceEvents": [...]}`` with
  * ``ph: "X"`` complete events, ``ts``/``dur`` in microseconds, ``pid`` = rank and one
    ``tid`` per stream (compute, send, recv, reduce: events on one track must nest);
  * flow events ``ph: "s"`` at each SEND and ``ph: "f"`` (``bp: "e"``, same ``id``) at
    its RECV, drawn as an arrow between the two slices;
  * ``ph: "C"`` counters: activation memory and microbatches in flight per rank (the
    accounting of :mod:`simulator.memory`);
  * ``ph: "M"`` metadata naming each process "rank r" and each thread by its stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from .memory import memory_timeline
from .trace import STREAMS, check_trace, transfers

__all__ = ["to_chrome_trace", "chrome_events"]

_TID = {stream: i for i, stream in enumerate(STREAMS)}
_US = 1e6


def _name(kind: str, stage: int, mb: int) -> str:
    if kind == "OPTIMIZER":
        return "optimizer"
    return f"{stage}{kind}{'' if mb < 0 else mb}"


def _slices(trace: pd.DataFrame) -> list[dict]:
    return [
        {"name": _name(r.kind, r.stage, r.mb), "cat": r.kind, "ph": "X", "ts": r.start * _US,
         "dur": (r.end - r.start) * _US, "pid": int(r.rank), "tid": _TID[r.stream],
         "args": {"stage": int(r.stage), "mb": int(r.mb)}}
        for r in trace.itertuples(index=False)
    ]


def _flows(trace: pd.DataFrame) -> list[dict]:
    """An arrow from each SEND's post to its RECV: at the RECV's post, or at the send's post
    if the receiver was already waiting, so it never points back in time and stays inside
    the RECV slice (which ends no earlier than the send started)."""
    events = []
    for n, p in enumerate(transfers(trace).itertuples(index=False)):
        name = f"{p.stage}{'F' if p.forward else 'B'}{p.mb}"
        events.append({"name": name, "cat": "transfer", "ph": "s", "id": n, "ts": p.start_send * _US,
                       "pid": int(p.rank_send), "tid": _TID["send"]})
        events.append({"name": name, "cat": "transfer", "ph": "f", "bp": "e", "id": n,
                       "ts": max(p.start_recv, p.start_send) * _US,
                       "pid": int(p.rank_recv), "tid": _TID["recv"]})
    return events


def _counters(trace: pd.DataFrame, act_memory: float | Sequence[float], w_fraction: float,
              measured: pd.DataFrame | None) -> list[dict]:
    if measured is not None:  # bytes a real run held: no microbatch count to go with them
        return [{"name": "activation memory", "ph": "C", "ts": t.time * _US, "pid": int(t.rank),
                 "args": {"bytes": float(t.bytes)}} for t in measured.itertuples(index=False)]
    timeline = memory_timeline(trace, act_memory, w_fraction)
    return [{"name": "activation memory", "ph": "C", "ts": t.time * _US, "pid": int(t.rank),
             "args": {"bytes": float(t.bytes), "microbatches": int(t.inflight)}}
            for t in timeline.itertuples(index=False)]


def _metadata(trace: pd.DataFrame) -> list[dict]:
    events = []
    for rank in sorted(set(trace["rank"].tolist())):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"rank {rank}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "args": {"sort_index": rank}})
        for stream, tid in _TID.items():
            events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": stream}})
    return events


def chrome_events(trace: pd.DataFrame, act_memory: float | Sequence[float] = 1.0,
                  w_fraction: float = 0.5, memory: pd.DataFrame | None = None) -> list[dict]:
    """All events of :func:`to_chrome_trace`, as a list."""
    check_trace(trace)
    return _metadata(trace) + _slices(trace) + _flows(trace) + _counters(trace, act_memory, w_fraction, memory)


def to_chrome_trace(trace: pd.DataFrame, path: str | Path, act_memory: float | Sequence[float] = 1.0,
                    w_fraction: float = 0.5, memory: pd.DataFrame | None = None) -> Path:
    """Write ``trace`` as Trace Event JSON to ``path``; open it at https://ui.perfetto.dev.

    The memory counter follows the accounting of :mod:`simulator.memory` with
    ``act_memory``, unless ``memory`` (columns rank, time, bytes: a measured counter) is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in trace.attrs.items() if isinstance(v, (str, int, float))}
    with path.open("w") as out:
        json.dump({"traceEvents": chrome_events(trace, act_memory, w_fraction, memory), "displayTimeUnit": "ms",
                   "otherData": meta}, out)
    return path
