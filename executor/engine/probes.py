"""What the profile measures of the machine rather than of the model's ops: the node's
sharing, compute beside a rank's own transfers, the links, the gradient all-reduce.

Each probe works on one rank's :class:`~executor.engine.runtime.Runtime` (the run's own
stages, progress policy and clock) and, for its own messages, on a duplicate of the
pipeline communicator (:func:`private`), so its tags can never meet a run's transfers.

* :func:`share`: the per-rank rate while k = 1 .. (ranks on the node) ranks compute at
  once, by throughput: F + B of the rank's first stage for about ``SHARE_SPAN_S``, alone
  over k at a time, normalised so that k = 1 is 1. A median of single ops would miss the
  sharing: with more ranks than cores the OS gives each a slice of milliseconds, and an
  op that fits in one runs at full speed (normalised so that k = 1 is 1 only where the
  node has a core a rank). The other ranks meanwhile wait as a run's
  waiting ranks do (the run's own progress policy: yielding where the node has a core a
  rank, else polling every 20 us): on an oversubscribed node each of their wake-ups takes
  a core from a computing rank for a moment, and a share measured beside sleeping ranks
  would miss that.
* :func:`interference`: pairs of ranks exchange one boundary-sized message per op while
  they compute (moved by the same progress pokes as a run); compute with the transfer in
  flight over compute without, minus 1, median over ranks (never below 0).
* :func:`pingpong`: one-way times between pipeline neighbours over 8 bytes and sizes from
  a quarter of the smallest activation to twice the largest (:func:`ping_sizes`).

The interference and ping-pong messages live where a run's do (:func:`_buffer`: the run's
:class:`~executor.transport.wire.Wire` makes them): pinned host memory where a GPU run
stages, device memory under a CUDA-aware MPI. The staging copies themselves are not in
the link: a run records them apart and a SEND's row starts after its copy
(:mod:`executor.transport.p2p`), so the link the simulator fits to a run and the one
measured here are the same MPI transfer.
* :func:`allreduce`: each stage's gradient all-reduce in its data-parallel group.
* :func:`scheduler`: what the OS scheduler does when the node's ranks outnumber its cores:
  how long a busy rank keeps a core, how long it waits for one, how late a waiting rank
  gets back (sleeping with the run's backoff, or yielding). :mod:`simulator.slicing`
  takes the cores and the slice.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np
import torch
from mpi4py import MPI

from ..record.alone import idle_barrier, stage_inputs
from ..record.plain import bare
from .runtime import Runtime

__all__ = ["private", "share", "interference", "pingpong", "ping_sizes", "allreduce", "turns", "scheduler",
           "SHARE_SPAN_S"]

SHARE_SPAN_S = 0.25  # each rank computes this long per k: many of the OS scheduler's time slices
PING, PONG, EXCHANGE = 1, 2, 3  # tags on the probes' own communicator (:func:`private`)


def private(comm: MPI.Comm) -> MPI.Comm:
    """A duplicate of ``comm``: a matching space of its own, so any tag is safe on it."""
    return comm.Dup()


def _buffer(wire, n: int):
    """An n-byte MPI buffer made as the run makes its receive buffers (host bytes without a wire)."""
    if wire is None:
        return np.zeros(n, dtype=np.uint8)
    return wire.buffer((n,), torch.uint8)[1]


def turns(world: MPI.Comm, work, together: bool):
    """Run ``work()`` on each rank in turn (the others asleep), or on all at once."""
    result = None
    for turn in range(1 if together else world.Get_size()):
        if together or turn == world.Get_rank():
            result = work()
        idle_barrier(world)
    return result


def _first_stage(runtime: Runtime, plan):
    """The rank's first stage, bare, with one microbatch's inputs of the run's shapes."""
    s = min(runtime.stages)
    data = runtime.interpreter.data
    inputs = stage_inputs(plan.boundary, s, plan.schedule.num_stages, runtime.device, data.inputs[0],
                          data.targets[0])
    return bare(runtime.stages[s]), inputs


def share(runtime: Runtime, plan, world: MPI.Comm, local: MPI.Comm, repeats: int) -> list[float]:
    """Per-rank rate with k = 1 .. node ranks computing at once (see the module)."""
    stage, (x, target, grad) = _first_stage(runtime, plan)
    measure = runtime.recorder.time_call

    def rounds_of(n: int) -> None:
        for _ in range(n):
            stage.forward(-3, x, target)
            stage.backward(-3, grad)

    one = turns(world, lambda: statistics.median(measure(rounds_of, 1) for _ in range(repeats)), together=False)
    n = max(repeats, math.ceil(SHARE_SPAN_S / max(world.allgather(one))))
    alone = turns(world, lambda: measure(rounds_of, n) / n, together=False)
    progress = runtime.progress
    rates = []
    for k in range(1, local.Get_size() + 1):
        mine = measure(rounds_of, n) / n if local.Get_rank() < k else None
        progress.wait(progress.add(world.Ibarrier()))  # the others wait meanwhile, as in a run
        rates.append(alone / mine if mine else None)
    stage.losses.clear()
    per_k = world.allgather(rates)  # small lists of floats
    rate = [statistics.median([r[k] for r in per_k if r[k] is not None]) for k in range(local.Get_size())]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if local.Get_size() <= cores:  # a rank computing beside yielding ones is alone: 1.0, not 1.0 +- noise
        rate = [r / rate[0] for r in rate]
    # (beside ranks that poll for a core it is not: k = 1 runs slower than alone too.) No
    # rank computes faster beside others than alone: a rate above 1 is noise.
    return [min(1.0, r) for r in rate]


def interference(runtime: Runtime, plan, pipe_comm: MPI.Comm, boundary_bytes: float, repeats: int) -> float:
    """Compute with an own transfer in flight over compute without, minus 1 (this rank)."""
    rank = pipe_comm.Get_rank()
    peer = rank ^ 1
    if peer >= pipe_comm.Get_size() or boundary_bytes <= 0:
        return 0.0
    stage, (x, target, grad) = _first_stage(runtime, plan)
    measure, progress = runtime.recorder.time_call, runtime.progress
    n = int(boundary_bytes)
    wire = runtime.interpreter.links.wire
    out, into = _buffer(wire, n), _buffer(wire, n)
    plain, busy = [], []
    for _ in range(repeats):
        plain.append(measure(stage.forward, -2, x, target) + measure(stage.backward, -2, grad))
        pipe_comm.Barrier()
        pending = [progress.add(pipe_comm.Irecv(into, source=peer, tag=EXCHANGE)),
                   progress.add(pipe_comm.Isend(out, dest=peer, tag=EXCHANGE))]
        busy.append(measure(stage.forward, -2, x, target) + measure(stage.backward, -2, grad))
        progress.wait_all(pending)
    stage.losses.clear()
    return max(0.0, statistics.median(busy) / statistics.median(plain) - 1.0)


def ping_sizes(acts: list[float]) -> list[int]:
    """Message sizes for the link fit: 8 bytes (pins the latency), then from a quarter of
    the smallest activation of the layouts to twice the largest, 2x apart (at least 5)."""
    low, high = max(8.0, min(acts) / 4), max(16.0, 2 * max(acts))
    steps = max(4, math.ceil(math.log2(high / low)))
    return sorted({8, *(int(low * (high / low) ** (k / steps)) for k in range(steps + 1))})


def pingpong(pipe_comm: MPI.Comm, acts: list[float], world: MPI.Comm, rounds: int = 20, wire=None) -> list[dict]:
    """One-way times between pipeline neighbours r, r + 1 (each pair in turn, the other
    ranks asleep), on every rank: [{"src", "dst", "samples": [(bytes, seconds), ...]}];
    the messages in buffers made by ``wire`` (the run's)."""
    rank, size = pipe_comm.Get_rank(), pipe_comm.Get_size()
    sizes = ping_sizes(acts)
    pairs = []
    for left in range(size - 1):
        samples: list[tuple[float, float]] = []
        if rank in (left, left + 1):
            peer = left + 1 if rank == left else left
            for n in sizes:
                buf = _buffer(wire, n)
                for k in range(rounds + 3):
                    start = time.perf_counter()
                    if rank == left:
                        pipe_comm.Send(buf, dest=peer, tag=PING), pipe_comm.Recv(buf, source=peer, tag=PONG)
                    else:
                        pipe_comm.Recv(buf, source=peer, tag=PING), pipe_comm.Send(buf, dest=peer, tag=PONG)
                    if k >= 3:
                        samples.append((float(n), (time.perf_counter() - start) / 2))
        idle_barrier(world)
        pairs.append({"src": left, "dst": left + 1, "samples": pipe_comm.bcast(samples, root=left)})
    return pairs


def allreduce(runtime: Runtime, dp: MPI.Comm, rounds: int = 10) -> dict[int, float]:
    """Median seconds of each of this rank's stages' gradient all-reduce over ``dp``."""
    times = {}
    for s, stage in runtime.stages.items():
        flat = np.zeros(max(1, sum(p.numel() for p in stage.parameters())), dtype=np.float32)
        samples = []
        for _ in range(rounds):
            dp.Barrier()
            start = time.perf_counter()
            dp.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            samples.append(time.perf_counter() - start)
        times[s] = statistics.median(samples)
    return times


GAP_S = 50e-6  # a busy loop's clock jumping further than this: the rank was off its core


def _busy(span: float) -> tuple[list[float], list[float]]:
    """Spin on the clock for ``span`` s; (slices, gaps): the runs on a core between waits
    for one longer than GAP_S, and those waits. A loop iteration is well under a microsecond."""
    slices, gaps = [], []
    now = time.perf_counter()
    end, began, last = now + span, now, now
    while now < end:
        now = time.perf_counter()
        if now - last > GAP_S:
            if began > end - span:  # the first run may have started before the loop: not whole
                slices.append(last - began)
            gaps.append(now - last)
            began = now
        last = now
    return slices, gaps


def _waiting(span: float, spin: bool, period: float = 3e-3) -> list[float]:
    """Wait for a deadline every ``period`` as a run's waiting rank waits (yielding, or
    sleeping with the run's backoff); how late the rank got back each time."""
    from ..transport.progress import MAX_INTERVAL_S

    late, end = [], time.perf_counter() + span
    deadline = time.perf_counter() + period
    while deadline < end:
        interval = 20e-6
        while (now := time.perf_counter()) < deadline:
            if spin:
                os.sched_yield()
            else:
                time.sleep(interval)
                interval = min(2 * interval, MAX_INTERVAL_S)
        late.append(now - deadline)
        deadline += period
    return late


def scheduler(world: MPI.Comm, local: MPI.Comm, span: float = 0.4) -> dict:
    """What the OS scheduler does with this node's ranks (every rank of the node takes part;
    the dict on world rank 0): with all of them busy, how long a rank runs before it is
    taken off its core (``slice_s``, median) and how long it then waits for one
    (``wait_s``); and with one of them waiting for a deadline every 3 ms beside the
    others busy, how late it gets back, sleeping with the run's backoff
    (``wake_sleeping_s``) or yielding (``wake_spinning_s``), medians."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    found: dict = {"cores": cores, "ranks": local.Get_size()}
    idle_barrier(world)
    slices, gaps = _busy(span)
    every = world.gather((slices, gaps), root=0)
    for spin in (False, True):
        idle_barrier(world)
        late = _waiting(span, spin) if local.Get_rank() == local.Get_size() - 1 else _busy(span) and []
        found["wake_spinning_s" if spin else "wake_sleeping_s"] = world.gather(late, root=0)
    if world.Get_rank() != 0:
        return {}
    runs = [s for got, _ in every for s in got]
    waits = [g for _, got in every for g in got]
    found["slice_s"] = statistics.median(runs) if runs else None  # None: nobody was taken off a core
    found["wait_s"] = statistics.median(waits) if waits else 0.0
    for key in ("wake_sleeping_s", "wake_spinning_s"):
        late = [x for part in found[key] for x in part]
        found[key] = statistics.median(late) if late else 0.0
    return found
