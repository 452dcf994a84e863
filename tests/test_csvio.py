"""torch's CSV format: round trips for every builder, and one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from test_schedules import build, configs

import schedules
from schedules import COMM_MODES, ScheduleError, load_csv

DATA = Path(__file__).parent / "data"
# tmp_path is function-scoped; hypothesis examples share it and overwrite one file.
_SHARED_TMP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)


def _same_shape(a: schedules.Schedule, b: schedules.Schedule) -> None:
    assert (a.num_ranks, a.num_microbatches, a.num_stages, a.stage_to_rank) == (
        b.num_ranks, b.num_microbatches, b.num_stages, b.stage_to_rank)


@_SHARED_TMP
@given(configs())
def test_round_trip_compute_only(tmp_path: Path, config) -> None:
    schedule = build(config)
    path = tmp_path / "s.csv"
    schedules.write_csv(schedule, path)
    loaded = load_csv(path)
    assert loaded.ops == schedule.ops and not loaded.has_comms
    _same_shape(loaded, schedule)
    assert loaded.name == "s"


@_SHARED_TMP
@given(configs())
def test_round_trip_with_comms(tmp_path: Path, config) -> None:
    schedule = build(config)
    path = tmp_path / "s.csv"
    for comm in COMM_MODES:
        schedules.write_csv(schedules.validate(schedule, comm), path)
        loaded = load_csv(path, name="again")
        assert loaded.ops == schedules.validate(schedule, comm).ops
        _same_shape(loaded, schedule)
        # checked from scratch: pairing and the dry run, not the lowering's proof
        assert schedules.validate(loaded, comm).ops == loaded.ops


def test_file_text_is_torch_format(tmp_path: Path) -> None:
    path = tmp_path / "gpipe.csv"
    schedules.write_csv(schedules.build("gpipe", ranks=2, microbatches=2), path)
    assert path.read_text().splitlines() == ["0F0,0F1,0B0,0B1", "1F0,1F1,1B0,1B1"]
    schedules.write_csv(schedules.validate(schedules.build("gpipe", ranks=2, microbatches=1)), path)
    assert path.read_text().splitlines() == ["0F0,0SEND_F0,0RECV_B0,0B0", "1RECV_F0,1F0,1B0,1SEND_B0"]


def test_empty_cells_are_idle_steps(tmp_path: Path) -> None:
    path = tmp_path / "idle.csv"
    path.write_text("0F0,,,0B0\n,1F0,1B0,\n\n")
    loaded = load_csv(path)
    assert [[str(op) for op in rank_ops] for rank_ops in loaded.ops] == [["0F0", "0B0"], ["1F0", "1B0"]]
    schedules.validate(loaded, "blocking")


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ScheduleError) as err:
        load_csv(path)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text, words", [
    ("0F0,0X0\n", ["rank 0, column 2", "cannot parse action '0X0'"]),
    ("0F0\n1F0,garbage\n", ["rank 1, column 2", "'garbage'"]),
    ("0UNSHARD,0F0\n", ["rank 0, column 1", "UNSHARD is not part of this IR"]),
    ("0F0,0RESHARD\n", ["rank 0, column 2", "RESHARD"]),
    ("0F0,0OVERLAP_F_B1\n", ["column 2", "OVERLAP_F_B"]),
    ('"(0B0;1F0)OVERLAP_F_B"\n', ["column 1", "OVERLAP_F_B pairs an F with a B"]),
    ("0F\n", ["column 1", "needs a microbatch"]),
    ("", ["no ranks"]),
    ("\n,,\n", ["no ranks"]),
    (",\n,\n1F0\n", ["stage 0 appears on no rank"]),
    ("0F0\n0B0\n", ["stage 0 is held by two ranks (0 and 1)"]),
])
def test_bad_files_name_the_cell(tmp_path: Path, text: str, words: list[str]) -> None:
    message = _error(tmp_path, text)
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="cannot read schedule file .*No such file"):
        load_csv(tmp_path / "nope.csv")


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScheduleError, match="not a CSV schedule|cannot parse"):
        load_csv(path)


def test_torch_fixture_with_unshard_is_rejected_by_name() -> None:
    path = DATA / "torch_ScheduleInterleaved1F1B_p4_m8_compute_comms_with_unshard.csv"
    with pytest.raises(ScheduleError, match=r"rank 0, column 1: action '0UNSHARD': UNSHARD is not part of this IR"):
        load_csv(path)
