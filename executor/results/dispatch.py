"""Host time around ops, read off a measured trace: what ``Costs.dispatch_*`` model.

Between two compute ops of a rank the executor records the first, pokes the progress
policy, samples memory, and runs the handlers of the SENDs and RECVs in between; none of
it is inside an op's own times. From each rank's consecutive compute ops A, B (trace
rows sorted by start) and the communication rows between them:

* no communication between: ``B.start - A.end`` is one sample of ``compute``;
* k SENDs first, then X (a RECV or B): ``(X.start - A.end - compute) / k`` is one of
  ``send`` (a SEND row starts when its handler is entered);
* a RECV last: ``B.start - RECV.end`` is one of ``recv`` (the row ends when its data was
  seen there, or when the rank reached it if the data was there already).

Each is the median of its samples (0 where there are none). Also read off the same
rows, per rank: ``optimizer``, the median OPTIMIZER row (the step on the gradients a
run leaves, which an optimizer step timed on its own underestimates here by half), and
``step``, the host time of a step outside its ops: from the step's origin to the rank's
first op (posting the first receives) plus from its last compute op's dispatch to its
optimizer (completing the sends).
"""

from __future__ import annotations

import statistics

import pandas as pd

__all__ = ["host_times"]

_SENDS = ("SEND_F", "SEND_B")
_RECVS = ("RECV_F", "RECV_B")


def host_times(trace: pd.DataFrame) -> dict[str, float]:
    """{"compute", "send", "recv"}: median seconds; "optimizer", "step": one per rank."""
    gaps = []  # (A end, rows between, B start)
    optimizer: dict[int, list[float]] = {}
    outside: dict[int, list[float]] = {}
    for (_, rank), rows in trace.groupby(["step" if "step" in trace else "rank", "rank"]):
        rows = rows.sort_values("start", kind="stable")
        compute = rows[(rows["stream"] == "compute") & (rows["kind"] != "OPTIMIZER")]
        comm_rows = rows[rows["kind"].isin(_SENDS + _RECVS)]
        ends, starts = compute["end"].to_numpy(), compute["start"].to_numpy()
        steps = rows[rows["kind"] == "OPTIMIZER"]
        if len(steps) and len(compute):
            optimizer.setdefault(rank, []).append(float(steps["end"].iloc[0] - steps["start"].iloc[0]))
            outside.setdefault(rank, []).append(float(rows["start"].min() + steps["start"].iloc[0] - ends.max()))
        for a_end, b_start in zip(ends[:-1], starts[1:]):
            between = comm_rows[(comm_rows["start"] >= a_end) & (comm_rows["start"] < b_start)]
            gaps.append((a_end, list(zip(between["kind"], between["start"], between["end"])), b_start))
    alone = [b - a for a, between, b in gaps if not between]
    compute_s = float(statistics.median(alone)) if alone else 0.0
    sends, recvs = [], []
    for a_end, between, b_start in gaps:
        k = next((j for j, row in enumerate(between) if row[0] not in _SENDS), len(between))
        if k:
            after = between[k][1] if k < len(between) else b_start
            sends.append(max(0.0, (after - a_end - compute_s) / k))
        if between and between[-1][0] in _RECVS:
            recvs.append(max(0.0, b_start - between[-1][2]))
    return {"compute": compute_s, "send": float(statistics.median(sends)) if sends else 0.0,
            "recv": float(statistics.median(recvs)) if recvs else 0.0,
            "optimizer": [statistics.median(optimizer[r]) for r in sorted(optimizer)],
            "step": [max(0.0, statistics.median(outside[r]) - compute_s) for r in sorted(outside)]}
