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

import math

import pandas as pd

from schedules import Transfer

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
    """Raise ValueError naming the first row and column that break the schema, if any.

    Checked: the columns are there; rank, stage and mb are whole numbers (rank >= 0;
    stage >= 0 and mb >= 0 except -1 where the schema gives it: stage for OPTIMIZER, mb
    for REDUCE_GRAD and OPTIMIZER); kind is a kind of the schema and stream its stream;
    start and end are finite, >= 0 and end >= start. A trace that breaks one of these
    would give a wrong prediction or picture, not an error.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"a trace is a DataFrame with columns {', '.join(TRACE_COLUMNS)}, got {type(df).__name__}")
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"trace lacks column(s) {', '.join(missing)}; expected {', '.join(TRACE_COLUMNS)}")
    if df.empty:
        return df
    kind = df["kind"]
    _first(df, ~kind.isin(list(_STREAM)), "kind", f"is not a kind of the schema ({', '.join(_STREAM)})")
    _first(df, df["stream"] != kind.map(_STREAM), "stream", "is not the stream of the row's kind")
    optimizer, whole_batch = kind == "OPTIMIZER", kind.isin(["REDUCE_GRAD", "OPTIMIZER"])
    for column, lowest in (("rank", 0), ("stage", -optimizer.astype(int)), ("mb", -whole_batch.astype(int))):
        values = _numbers(df, column)
        _first(df, values.isna() | (values != values.round()), column, "is not a whole number")
        _first(df, values < lowest, column, "is below its least value (0; -1 for stage of OPTIMIZER, "
               "mb of REDUCE_GRAD and OPTIMIZER)")
    times = {}
    for column in ("start", "end"):
        times[column] = values = _numbers(df, column)
        _first(df, values.isna() | values.isin([math.inf, -math.inf]), column, "is not a finite number of seconds")
        _first(df, values < 0, column, "is negative: times are seconds from the start of the step")
    _first(df, times["end"] < times["start"], "end", "is before start")
    return df


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    values = df[column]
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(math.nan, index=values.index)
    return pd.to_numeric(values, errors="coerce")


def _first(df: pd.DataFrame, bad: pd.Series, column: str, what: str) -> None:
    """Raise for the first row where ``bad`` holds, naming it and its value."""
    if not bad.any():
        return
    at = int(bad.to_numpy().argmax())
    row = df.iloc[at]
    value = str(row[column])
    value = value if len(value) <= 30 else value[:30] + "..."
    raise ValueError(f"trace row {at} (rank {row['rank']}, kind {row['kind']}): {column} {value!r} {what}")


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
    ``_recv`` (plus ``bytes`` when the trace has it). A row's transfer is named as
    :class:`schedules.Transfer` names it; pairs match within ``step`` and ``replica`` when
    the trace has those columns."""
    groups = [c for c in _GROUPS if c in trace.columns]
    sides = Transfer.sides()
    rows = trace[trace["kind"].isin(list(sides))]
    direction = rows["kind"].map({kind: side[0] for kind, side in sides.items()})
    rows = rows.assign(forward=direction == "F",
                       stage=rows["stage"] + rows["kind"].map({kind: side[1] for kind, side in sides.items()}))
    sent = rows["kind"].str.startswith("SEND")
    on = ["forward", "stage", "mb", *groups]
    extra = ["bytes"] if "bytes" in trace.columns else []
    return rows[sent][on + ["rank", "start", "end"] + extra].merge(
        rows[~sent][on + ["rank", "start", "end"]], on=on, suffixes=("_send", "_recv"))
