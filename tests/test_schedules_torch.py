"""The new builders against torch 2.13's own schedules, op for op (compute only, idle cells
dropped), generated live with stand-in stages (tests/data/make_torch_csv.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_csv_torch import gen

import schedules
import simulator
from schedules import OpKind, load_csv

DATA = Path(__file__).parent / "data"
# torch class -> our builder
SAME = {
    "ScheduleInterleaved1F1B": "interleaved-1f1b",
    "ScheduleLoopedBFS": "looped-bfs",
    "ScheduleInterleavedZeroBubble": "interleaved-zb",
    "ScheduleDualPipeV": "dualpipev",
}
GRID = [(p, m) for p in (1, 2, 3, 4, 6) for m in range(1, 17)]


def _theirs(name: str, ranks: int, microbatches: int) -> list[list[str]] | None:
    """torch's compute order, or None where torch refuses these sizes."""
    try:
        table = gen.tables(name, ranks, microbatches)["compute_only"]
    except ValueError:
        return None
    return [[cell for cell in row if cell] for row in table]


def _ours(name: str, ranks: int, microbatches: int) -> list[list[str]] | None:
    if not schedules.registry.accepts(SAME[name], ranks, microbatches):
        return None
    return [[str(op) for op in row] for row in schedules.build(SAME[name], ranks, microbatches, chunks=2).ops]


@pytest.mark.parametrize("name", SAME)
def test_op_for_op_with_torch(name: str) -> None:
    compared = 0
    for ranks, microbatches in GRID:
        theirs = _theirs(name, ranks, microbatches)
        assert _ours(name, ranks, microbatches) == theirs, (name, ranks, microbatches)
        compared += theirs is not None
    assert compared >= 40  # both refuse the same sizes, and most sizes build


@pytest.mark.parametrize("microbatches", [5, 6, 10])
def test_interleaved_any_m_like_torch(microbatches: int) -> None:
    # m not divisible by p = 4: torch's rounds, max(1, m // p), m a multiple of them
    theirs = _theirs("ScheduleInterleaved1F1B", 4, microbatches)
    assert theirs is not None and _ours("ScheduleInterleaved1F1B", 4, microbatches) == theirs
    schedule = schedules.build("interleaved-1f1b", 4, microbatches)
    for comm in schedules.COMM_MODES:
        simulator.simulate(schedule, simulator.Costs.model_share(2), comm)


def test_torch_refuses_what_we_refuse() -> None:
    assert _theirs("ScheduleInterleaved1F1B", 4, 9) is None
    with pytest.raises(schedules.ScheduleError, match="rounds"):
        schedules.build("interleaved-1f1b", 4, 9)


def test_pytorch_dualpipev_artifact_loads_validates_and_simulates() -> None:
    # pytorch's test artifact for ScheduleDualPipeV (4 ranks, 10 microbatches), as torch
    # 2.13 writes it: identical to github.com/pytorch/pytorch
    # test/distributed/pipelining/artifacts/dualpipev_4rank_10mb.csv
    path = DATA / "torch_ScheduleDualPipeV_p4_m10_compute_only.csv"
    schedule = load_csv(path)
    assert (schedule.num_ranks, schedule.num_microbatches, schedule.num_stages) == (4, 10, 8)
    assert "(0F7;7B3)OVERLAP_F_B" in path.read_text()
    assert schedule.ops == schedules.build("dualpipev", 4, 10).ops
    pairs = sum(op.kind is OpKind.OVERLAP_F_B for _, op in schedule)
    assert pairs == path.read_text().count("OVERLAP_F_B") == 41
    for comm in schedules.COMM_MODES:
        for dp in (1, 2):
            result = simulator.simulate(schedule, simulator.Costs.model_share(2, dp=dp), comm)
            assert result.makespan > 0
