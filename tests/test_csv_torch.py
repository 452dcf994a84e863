"""Interop with torch.distributed.pipelining: schedules torch generates load, validate and lower.

torch is asked live (tests/data/make_torch_csv.py builds its schedules with stand-in
stages), and the committed CSVs under tests/data/ must still be what torch writes.
torch's tables are also an oracle for our builders: gpipe, interleaved-1f1b and zbv give
torch's op order exactly.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

import schedules
from schedules import COMM_MODES, ScheduleError, load_csv

DATA = Path(__file__).parent / "data"


def _generator():
    spec = importlib.util.spec_from_file_location("make_torch_csv", DATA / "make_torch_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
logging.getLogger("torch.distributed.pipelining").setLevel(logging.WARNING)  # "Using <schedule>" lines

VALID = ["ScheduleGPipe", "ScheduleInterleaved1F1B", "ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble"]
# torch class -> our builder with the same op order (REDUCE_GRAD and idle cells aside).
SAME_AS = {"ScheduleGPipe": "gpipe", "ScheduleInterleaved1F1B": "interleaved-1f1b", "ScheduleZBVZeroBubble": "zbv"}


def _write(tmp_path: Path, table: list[list[str]], label: str) -> Path:
    path = tmp_path / f"{label}.csv"
    gen.write(path, table)
    return path


def _check_loads_validates_lowers(path: Path) -> schedules.Schedule:
    schedule = load_csv(path)
    for comm in COMM_MODES:
        lowered = schedules.validate(schedule, comm)
        assert lowered.program.has_comms or schedule.num_ranks == 1
        assert lowered.compute_only().ops == schedule.compute_only().ops
    return schedule


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("ranks, microbatches", [(1, 2), (2, 4), (3, 6), (4, 8), (4, 12), (2, 3)])
def test_torch_schedules_load_validate_and_lower(tmp_path: Path, name: str, ranks: int, microbatches: int) -> None:
    try:
        tables = gen.tables(name, ranks, microbatches)
    except ValueError as err:  # torch's own constraints, e.g. microbatches a multiple of rounds
        pytest.skip(f"torch refuses: {err}")
    for form, table in tables.items():
        schedule = _check_loads_validates_lowers(_write(tmp_path, gen.strip_fsdp(table), form))
        assert schedule.num_ranks == ranks
        assert schedule.has_comms == (form == "compute_comms" and ranks > 1)
        if form == "compute_comms":  # torch's own send/recv order keeps its place
            assert schedules.validate(schedule, "blocking").ops == schedule.ops


@pytest.mark.parametrize("name", SAME_AS)
@pytest.mark.parametrize("ranks, microbatches", [(1, 3), (2, 4), (3, 6), (4, 8), (2, 16)])
def test_our_builders_match_torch(tmp_path: Path, name: str, ranks: int, microbatches: int) -> None:
    table = gen.tables(name, ranks, microbatches)["compute_only"]
    theirs = load_csv(_write(tmp_path, table, "t")).compute_only()
    theirs = theirs.replace_ops([op for op in rank_ops if op.kind.is_compute] for rank_ops in theirs.ops)
    ours = schedules.build(SAME_AS[name], ranks=ranks, microbatches=microbatches, chunks=None if name == "ScheduleGPipe" else 2)
    assert theirs.ops == ours.ops
    assert theirs.stage_to_rank == ours.stage_to_rank


def test_torch_1f1b_table_has_an_off_by_one_on_the_last_rank(tmp_path: Path) -> None:
    # torch's Schedule1F1B._get_pipeline_order starts the last rank's forwards at mb 1
    # (forward_mb is incremented before first use when there is no warm-up), so its
    # table runs {p-1}B0 before any {p-1}F0. The table is descriptive only (step() runs a
    # hand-written loop), but our validator must reject it. With the shift undone the
    # table is exactly our 1f1b.
    ranks, microbatches = 4, 8
    table = gen.tables("Schedule1F1B", ranks, microbatches)["compute_only"]
    if table[-1][0] != f"{ranks - 1}F1":
        pytest.skip("torch fixed its Schedule1F1B table")
    with pytest.raises(ScheduleError, match=r"rank 3, step 1, op 3B0: runs before its forward 3F0"):
        schedules.validate(load_csv(_write(tmp_path, table, "torch_1f1b")))
    fixed = [cell.replace(f"{ranks - 1}F", "") for cell in table[-1]]
    table[-1] = [f"{ranks - 1}F{int(rest) - 1}" if rest.isdigit() else cell for cell, rest in zip(table[-1], fixed)]
    loaded = load_csv(_write(tmp_path, table, "fixed")).compute_only()
    ours = schedules.build("1f1b", ranks=ranks, microbatches=microbatches)
    assert [[op for op in rank_ops if op.kind.is_compute] for rank_ops in loaded.ops] == [list(r) for r in ours.ops]


def _committed() -> list[Path]:
    return sorted(DATA.glob("torch_*.csv"))


def test_committed_files_are_what_torch_writes() -> None:
    expected = {}
    for name in (*gen.SINGLE, *gen.MULTI):
        for form, table in gen.tables(name).items():
            expected[gen.file_name(name, form)] = gen.strip_fsdp(table)
            if name == "ScheduleInterleaved1F1B" and form == "compute_comms":
                expected[gen.file_name(name, form + "_with_unshard")] = table
    expected[gen.DUALPIPEV_FILE] = gen.tables("ScheduleDualPipeV", 4, 10)["compute_only"]
    assert sorted(p.name for p in _committed()) == sorted(expected)
    for path in _committed():
        assert path.read_text().splitlines() == [",".join(row) for row in expected[path.name]], path.name


@pytest.mark.parametrize("path", [p for p in _committed() if "1F1B_p" not in p.name or "Interleaved" in p.name],
                         ids=lambda p: p.stem)
def test_committed_files_validate(path: Path) -> None:
    if path.stem.endswith("with_unshard"):
        with pytest.raises(ScheduleError, match="UNSHARD is not part of this IR"):
            load_csv(path)
        return
    _check_loads_validates_lowers(path)


def test_committed_torch_1f1b_is_rejected() -> None:
    schedule = load_csv(DATA / "torch_Schedule1F1B_p4_m8_compute_only.csv")
    for comm in COMM_MODES:
        with pytest.raises(ScheduleError, match="runs before its forward 3F0"):
            schedules.validate(schedule, comm)
