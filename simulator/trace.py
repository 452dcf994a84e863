"""The one trace schema shared by simulated and measured runs.

One row per op execution: ``rank, stage, mb, kind, stream, start, end``.
  rank    pipeline rank that ran the op (int)
  stage   global model stage (int)
  mb      microbatch (int; -1 for REDUCE_GRAD, which covers all microbatches)
  kind    op kind name: F, B, I, W, SEND_F, RECV_F, SEND_B, RECV_B, REDUCE_GRAD
  stream  "compute" for F/B/I/W, "send" for SEND_*, "recv" for RECV_*, "reduce" for REDUCE_GRAD
  start   seconds from the start of the step (float); for communication: when posted
  end     seconds (float); for communication: when complete
Every plot, table and trace writer takes a DataFrame with these columns, from either source.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["TRACE_COLUMNS", "STREAMS", "stream_of", "empty_trace", "check_trace"]

TRACE_COLUMNS = ["rank", "stage", "mb", "kind", "stream", "start", "end"]
STREAMS = ("compute", "send", "recv", "reduce")

_STREAM = {
    "F": "compute", "B": "compute", "I": "compute", "W": "compute",
    "SEND_F": "send", "SEND_B": "send", "RECV_F": "recv", "RECV_B": "recv",
    "REDUCE_GRAD": "reduce",
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
