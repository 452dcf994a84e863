"""The executor's parts without mpiexec: tags within TAG_UB, the memory meter against
hand counts, and the main-thread progress policy on a self-message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mpi4py import MPI
from torch import nn

import schedules
from executor.compute.memory import MemoryMeter
from executor.compute.stage import Stage
from executor.transport.progress import Progress, make_progress
from executor.transport.tags import TagPlan
from schedules.ir import Transfer


def _lowered(name, ranks, microbatches, chunks=None):
    return schedules.validate(schedules.build(name, ranks=ranks, microbatches=microbatches, chunks=chunks))


def test_tags_unique_when_they_fit():
    lowered = _lowered("interleaved-1f1b", 4, 8, 2)
    plan = TagPlan.fit(lowered.num_stages, 8, 536870911)
    keys = {Transfer.of(op) for ops in lowered.ops for op in ops if op.kind.is_comm}
    assert plan.cycle == 8
    assert len({plan.tag(k) for k in keys}) == len(keys)


def test_tags_stay_under_the_guaranteed_bound_at_p64():
    """p = 64, v = 2, m = 512: 131,072 transfers against the standard's 32,767."""
    lowered = _lowered("interleaved-1f1b", 64, 512, 2)
    plan = TagPlan.fit(lowered.num_stages, 512, 32767)
    tags = [plan.tag(Transfer.of(op)) for ops in lowered.ops for op in ops if op.kind.is_comm]
    assert max(tags) <= 32767 and min(tags) >= 0
    assert plan.cycle == 32768 // 256
    plan.check(lowered.ops)  # sends and receives of every shared tag come in one order


def test_shared_tags_refuse_out_of_order_transfers():
    lowered = _lowered("gpipe", 2, 4)
    ops = [list(rank_ops) for rank_ops in lowered.ops]
    recvs = [i for i, op in enumerate(ops[1]) if op.kind is schedules.OpKind.RECV_F]
    ops[1][recvs[0]], ops[1][recvs[1]] = ops[1][recvs[1]], ops[1][recvs[0]]
    TagPlan.fit(2, 4, 1 << 20).check(ops)  # own tags: order does not matter
    with pytest.raises(ValueError, match="received in another order"):
        TagPlan.fit(2, 4, 3).check(ops)  # 4 channels x 1: every mb shares its channel's tag


def _stage(memory, index=1):
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(3)]
    meter = memory([p for layer in layers for p in layer.parameters()])
    return Stage(index, layers, None, microbatches=1, memory=meter), meter


def test_memory_meter_counts_saved_storages_once_and_frees_them():
    stage, meter = _stage(MemoryMeter)
    x = torch.randn(8, 16)
    stage.forward(0, x, None)
    # per layer: Linear saves its input, Tanh its output (the next Linear's input): the
    # stage input and 3 Tanh outputs, 8 x 16 float32 each; weights are not counted
    assert meter.current == 4 * 8 * 16 * 4
    stage.backward(0, torch.ones(8, 16))
    assert meter.current == 0


def test_memory_meter_split_backward_keeps_the_w_share():
    stage, meter = _stage(MemoryMeter)
    stage.forward(0, torch.randn(8, 16), None)
    held = meter.current
    stage.backward_input(0, torch.ones(8, 16))
    assert 0 < meter.current <= held  # W still needs layer inputs
    stage.backward_weight(0)
    assert meter.current == 0


def test_memory_meter_counts_a_delivered_buffer_until_it_is_gone():
    meter = MemoryMeter([])
    buffer = torch.empty(1000, dtype=torch.float32)
    meter.hold(buffer)
    view = buffer[10:20]
    assert meter.current == 4000
    del buffer
    assert meter.current == 4000  # a view keeps its base tensor alive
    del view
    assert meter.current == 0


def test_hooks_progress_completes_on_poke_and_wait():
    progress = make_progress("hooks", spin=True)
    out, into = np.arange(4.0), np.zeros(4)
    recv = progress.add(MPI.COMM_SELF.Irecv(into, source=0, tag=7))
    send = progress.add(MPI.COMM_SELF.Isend(out, dest=0, tag=7))
    assert progress.outstanding == 2
    progress.poke()
    ends = progress.wait_all([recv, send])
    assert all(e is not None for e in ends) and progress.outstanding == 0
    assert into.tolist() == out.tolist()


def test_mpich_policy_does_not_poke():
    progress = make_progress("mpich", spin=False)
    assert isinstance(progress, Progress) and not progress.pokes
    into = np.zeros(1)
    item = progress.add(MPI.COMM_SELF.Irecv(into, source=0, tag=3))
    progress.poke()  # no MPI call: MPICH's own thread would move it
    assert item.done_at is None
    MPI.COMM_SELF.Send(np.ones(1), dest=0, tag=3)
    assert progress.wait(item) > 0 and into[0] == 1


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown progress policy"):
        make_progress("spin", spin=True)


@pytest.mark.parametrize("ranks,chunks,m", [(2, 1, 8), (2, 2, 16), (4, 2, 4), (3, 2, 1), (2, 3, 6)])
def test_profile_reference_runs_time_every_kind_of_every_stage(ranks, chunks, m):
    import schedules
    from executor.results.profile import reference_names

    fused, split = reference_names(ranks, chunks, m)
    for name, kinds in ((fused, "FB"), (split, "FIW")):
        schedule = schedules.build(name, ranks=ranks, microbatches=m, chunks=chunks)
        assert schedule.chunks == chunks
        timed = {(op.kind.value, op.stage) for ops in schedule.ops for op in ops}
        assert timed == {(k, s) for k in kinds for s in range(ranks * chunks)}


def test_profile_refuses_a_layout_no_reference_schedule_builds():
    from executor.config import UsageError
    from executor.results.profile import reference_names

    assert reference_names(2, 2, 5) == ("looped-bfs", "zbv")  # torch's interleaving rule refuses m = 5
    with pytest.raises(UsageError, match="no reference schedule builds for ranks=2 chunks=3 microbatches=5"):
        reference_names(2, 3, 5)


def test_host_times_read_off_a_trace():
    import pandas as pd

    from executor.results.dispatch import host_times

    us = 1e-6
    rows = []  # rank 0: F, F (10 us apart); F, 2 SENDs, B (10 + 2 x 30 us); F, RECV (arrives late), F
    for step in range(3):
        t = 100 * us
        rows += [(0, 0, 0, "F", "compute", t, t + 1e-3)]
        t += 1e-3 + 10 * us
        rows += [(0, 0, 1, "F", "compute", t, t + 1e-3)]
        t += 1e-3 + 10 * us
        rows += [(0, 0, 1, "SEND_F", "send", t, t + 5e-3), (0, 0, 2, "SEND_F", "send", t + 30 * us, t + 5e-3)]
        t += 60 * us
        rows += [(0, 0, 2, "B", "compute", t, t + 2e-3)]
        t += 2e-3 + 10 * us
        rows += [(0, 0, 3, "RECV_B", "recv", t, t + 500 * us)]
        t += 500 * us + 40 * us
        rows += [(0, 0, 3, "B", "compute", t, t + 2e-3), (0, -1, -1, "OPTIMIZER", "compute", t + 2.2e-3, t + 2.7e-3)]
    trace = pd.DataFrame([(*r, step) for step in range(3) for r in rows[step * 8:(step + 1) * 8]],
                         columns=["rank", "stage", "mb", "kind", "stream", "start", "end", "step"])
    got = host_times(trace)
    assert got["compute"] == pytest.approx(10 * us) and got["send"] == pytest.approx(30 * us)
    assert got["recv"] == pytest.approx(40 * us)
    assert got["optimizer"] == [pytest.approx(0.5e-3)] and got["step"] == [pytest.approx(100 * us + 200 * us - 10 * us)]
