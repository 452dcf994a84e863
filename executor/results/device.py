"""What summary.json says of the device and the transport beneath a run: the MPI thread
level, the bytes crossing each stage boundary, and on a GPU each step's memory over its
baseline, the staging copies and the bound on the device clock's mapping.

* ``cuda_step_baseline_bytes`` / ``cuda_step_peak_above_baseline_bytes``, per pipeline
  rank: what the allocator held at a timed step's start (weights, the batch, the
  allocator's and libraries' workspaces; no gradients: they are dropped before each
  step), median over the timed steps; and the most the step allocated above that, its
  highest over the timed steps. The latter holds activations, received buffers, the
  weight gradients (as many bytes as the rank's weights, made during the step) and
  temporaries; the memory meter's peak (activations and received buffers only) sits
  beside it in ``measured_peak_activation_bytes``.
* ``staging``: per kind (D2H before a SEND, H2D after a RECV), the copies' count, median
  seconds, median bytes and the rate those give.
* ``cuda_clock_mapping_error_s``: the largest bound over ranks and steps on where a CUDA
  event lands on the host clock (:class:`executor.record.timing.Recorder`).
"""

from __future__ import annotations

import statistics

from mpi4py import MPI


__all__ = ["device_keys", "thread_level"]

_LEVELS = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled", MPI.THREAD_SERIALIZED: "serialized",
           MPI.THREAD_MULTIPLE: "multiple"}


def thread_level() -> str:
    """MPI.Query_thread() of this process, by name."""
    return _LEVELS.get(MPI.Query_thread(), str(MPI.Query_thread()))


def device_keys(result) -> dict:
    """summary.json's keys for the device and transport of ``result`` (a RunResult)."""
    out: dict = {"mpi_thread_level": thread_level(), "boundary_bytes": result.plan.message_bytes()[0]}
    if result.device is not None:
        steps = [d["memory"] for d in result.device]
        out["cuda_step_baseline_bytes"] = [int(statistics.median(b for b, _ in s)) if s else None for s in steps]
        out["cuda_step_peak_above_baseline_bytes"] = [max((p - b for b, p in s), default=None) for s in steps]
        errors = [e for d in result.device for e in d["mapping_error"]]
        out["cuda_clock_mapping_error_s"] = max(errors) if errors else None
    if result.staging is not None and len(result.staging):
        out["staging"] = staging_table(result.staging)
    return out


def staging_table(copies) -> dict:
    """{kind: {count, median_s, median_bytes, gb_per_s}} of a staging DataFrame."""
    table = {}
    for kind, rows in copies.groupby("kind"):
        seconds = float((rows["end"] - rows["start"]).median())
        size = float(rows["bytes"].median())
        table[kind] = {"count": int(len(rows)), "median_s": seconds, "median_bytes": size,
                       "gb_per_s": size / seconds / 1e9 if seconds > 0 else None}
    return table
