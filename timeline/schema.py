"""The one trace schema shared by simulated and measured runs.

One row per op execution: ``rank, stage, mb, kind, stream, start, end``.
  rank    pipeline rank that ran the op (int)
  stage   global model stage (int)
  mb      microbatch (int; -1 for REDUCE_GRAD, which covers all microbatches)
  kind    op kind name: F, B, I, W, SEND_F, RECV_F, SEND_B, RECV_B, REDUCE_GRAD, and
          optionally OPTIMIZER (the optimizer step; stage -1, mb -1, stream compute)
  stream  "compute" for F/B/I/W, "send" for SEND_*, "recv" for RECV_*, "reduce" for REDUCE_GRAD
  start   seconds from the start of the step (float); for communication: when posted
  end     seconds (float); for communication: when complete
Every plot, table and trace writer takes a DataFrame with these columns, from either source.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["TRACE_COLUMNS", "STREAMS", "stream_of", "empty_trace", "check_trace", "makespan_of", "bubble_of", "transfers"]

TRACE_COLUMNS = ["rank", "stage", "mb", "kind", "stream", "start", "end"]
STREAMS = ("compute", "send", "recv", "reduce")

_STREAM = {
    "F": "compute", "B": "compute", "I": "compute", "W": "compute",
    "SEND_F": "send", "SEND_B": "send", "RECV_F": "recv", "RECV_B": "recv",
    "REDUCE_GRAD": "reduce",
    "OVERLAP_F_B": "compute",  # the interpreters write a pair as its F and B rows; a foreign trace may not
    "OPTIMIZER": "compute",  # optional row: the optimizer step after the last op (stage -1, mb -1)
}


def stream_of(kind: str) -> str:
    """The stream an op kind runs on."""
    return _STREAM[kind]


def empty_trace() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        TRACE_COLUMNS, ["int64", "int64", "int64", "object", "object", "float64", "float64"])})


def check_trace(df: pd.DataFrame) -> pd.DataFrame:
    """Raise ValueError naming what is wrong if ``df`` does not follow the schema."""
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"trace lacks column(s) {', '.join(missing)}; expected {', '.join(TRACE_COLUMNS)}")
    bad = df[df["end"] < df["start"]]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(f"trace row rank {row['rank']} {row['stage']}{row['kind']}{row['mb']}: end before start")
    return df


def makespan_of(trace: pd.DataFrame) -> float:
    """Step time of a one-step trace: from 0 to the last end."""
    return float(trace["end"].max()) if len(trace) else 0.0


def bubble_of(trace: pd.DataFrame, ranks: int | None = None) -> float:
    """1 - compute time / (ranks * makespan), read off a one-step trace."""
    span = makespan_of(trace)
    if span == 0:
        return 0.0
    ranks = int(trace["rank"].max()) + 1 if ranks is None else ranks
    compute = trace[trace["stream"] == "compute"]
    return 1.0 - float((compute["end"] - compute["start"]).sum()) / (ranks * span)


_GROUPS = ("step", "replica")  # optional columns that keep repeated transfers apart


def transfers(trace: pd.DataFrame) -> pd.DataFrame:
    """One row per SEND matched with its RECV: ``forward``, ``stage`` (the stage the data
    leaves), ``mb``, then ``rank``, ``start`` and ``end`` of each side suffixed ``_send`` and
    ``_recv`` (plus ``bytes`` when the trace has it). Pairs match within ``step`` and
    ``replica`` when the trace has those columns."""
    groups = [c for c in _GROUPS if c in trace.columns]
    kind = trace["kind"]
    sends = trace[kind.isin(["SEND_F", "SEND_B"])]
    recvs = trace[kind.isin(["RECV_F", "RECV_B"])]
    sends = sends.assign(forward=sends["kind"] == "SEND_F")
    forward = recvs["kind"] == "RECV_F"
    # a RECV names its own stage; the data leaves the neighbour
    recvs = recvs.assign(forward=forward, stage=recvs["stage"] + forward.map({True: -1, False: 1}))
    on = ["forward", "stage", "mb", *groups]
    extra = ["bytes"] if "bytes" in trace.columns else []
    return sends[on + ["rank", "start", "end"] + extra].merge(
        recvs[on + ["rank", "start", "end"]], on=on, suffixes=("_send", "_recv"))
