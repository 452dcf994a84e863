"""Trace Event JSON for Perfetto UI and chrome://tracing.

Format (Trace Event Format, Google): ``{"traceEvents": [...]}`` with
  * ``ph: "X"`` complete events, ``ts``/``dur`` in microseconds, ``pid`` = rank and one
    ``tid`` per stream (compute, send, recv, reduce: events on one track must nest);
  * flow events ``ph: "s"`` at each SEND and ``ph: "f"`` (``bp: "e"``, same ``id``) at
    its RECV, drawn as an arrow between the two slices;
  * ``ph: "C"`` counters: activation memory per rank (and microbatches in flight, when
    the memory timeline has them), from a timeline the caller made: the simulator's
    accounting (:mod:`simulator.memory`) or the executor's measurement;
  * ``ph: "M"`` metadata naming each process "rank r" and each thread by its stream.
"""

from __future__ import annotations

import json
from pathlib import Path
import pandas as pd

from .schema import STREAMS, check_trace, transfers

__all__ = ["write_perfetto", "chrome_events"]

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


def _counters(memory: pd.DataFrame | None) -> list[dict]:
    """Counter events of a memory timeline (columns rank, time, bytes[, inflight])."""
    if memory is None:
        return []
    counted = "inflight" in memory.columns
    return [{"name": "activation memory", "ph": "C", "ts": t.time * _US, "pid": int(t.rank),
             "args": {"bytes": float(t.bytes), **({"microbatches": int(t.inflight)} if counted else {})}}
            for t in memory.itertuples(index=False)]


def _metadata(trace: pd.DataFrame) -> list[dict]:
    events = []
    for rank in sorted(set(trace["rank"].tolist())):
        events.append({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"rank {rank}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": rank, "args": {"sort_index": rank}})
        for stream, tid in _TID.items():
            events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": stream}})
    return events


def chrome_events(trace: pd.DataFrame, memory: pd.DataFrame | None = None) -> list[dict]:
    """All events of :func:`write_perfetto`, as a list."""
    check_trace(trace)
    return _metadata(trace) + _slices(trace) + _flows(trace) + _counters(memory)


def write_perfetto(trace: pd.DataFrame, path: str | Path, memory: pd.DataFrame | None = None) -> Path:
    """Write ``trace`` as Trace Event JSON to ``path``; open it at https://ui.perfetto.dev.
    ``memory`` (rank, time, bytes[, inflight]) becomes the activation-memory counter."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in trace.attrs.items() if isinstance(v, (str, int, float))}
    with path.open("w") as out:
        json.dump({"traceEvents": chrome_events(trace, memory), "displayTimeUnit": "ms", "otherData": meta}, out)
    return path
