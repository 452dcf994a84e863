"""``python -m schedules``: grids and bubble lines on success, one line and exit 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import schedules
from schedules import cli

DATA = Path(__file__).parent / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schedules", *args], capture_output=True, text=True, timeout=120)


def test_grid_and_bubble_line() -> None:
    done = run("1f1b", "--ranks", "3", "--microbatches", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1f1b: 3 ranks, 4 microbatches, 3 stages, 24 ops"
    assert lines[1].split() == ["step", "|", "rank", "0", "|", "rank", "1", "|", "rank", "2"]
    assert lines[3].split() == ["0", "|", "0F0", "|", "1F0", "|", "2F0"]
    # (p - 1) / (m + p - 1) = 2 / 6, stated as the share of rank-time idle
    assert "analytic bubble fraction (share of rank-time idle, t_f = t_i = t_w = 1): 0.3333" in lines
    assert lines[-1] == "unit-cost dry run (async, free communication): makespan 18, bubble fraction 0.3333"
    assert done.stderr == ""


def test_comms_grid_blocking_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "zbv.csv"
    done = run("zbv", "--ranks", "2", "--microbatches", "3", "--comms", "--comm", "blocking", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    assert "1RECV_F0" in done.stdout
    assert "analytic bubble fraction (share of rank-time idle, t_f = t_i = t_w = 1): no closed form" in done.stdout
    assert "unit-cost dry run (blocking, free communication)" in done.stdout
    # The file holds the list shown: the blocking lowering, not the async one.
    blocking = schedules.validate(schedules.build("zbv", ranks=2, microbatches=3), "blocking")
    assert out.read_text().splitlines() == [",".join(map(str, rank_ops)) for rank_ops in blocking.ops]


def test_file_input() -> None:
    done = run("--file", str(DATA / "torch_ScheduleZBVZeroBubble_p4_m8_compute_only.csv"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("torch_ScheduleZBVZeroBubble_p4_m8_compute_only: 4 ranks, 8 microbatches, 8 stages")
    assert "no closed form (schedule loaded from a file)" in done.stdout


def test_list() -> None:
    done = run("--list")
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert names == schedules.names()  # zb-auto among them: a registered schedule


def test_help_documents_every_flag() -> None:
    done = run("--help")
    assert done.returncode == 0
    for flag in ("--file", "--list", "--ranks", "--microbatches", "--chunks", "--comms", "--comm", "--csv"):
        assert flag in done.stdout
    assert all(action.help for action in cli.parser()._actions)


@pytest.mark.parametrize("args, words", [
    (["nope"], ["unknown schedule 'nope'"]),
    (["1f1b", "--ranks", "0"], ["ranks must be a whole number >= 1, got 0"]),
    (["1f1b", "--microbatches", "-2"], ["microbatches must be a whole number >= 1, got -2"]),
    (["1f1b", "--chunks", "2"], ["1f1b: chunks must be 1"]),
    (["zbv", "--chunks", "3"], ["zbv: chunks must be 2"]),
    (["interleaved-1f1b", "--ranks", "4", "--microbatches", "9"], ["rounds (torch's rule)"]),
    (["--file", "/no/such/file.csv"], ["cannot read schedule file", "No such file"]),
    ([], ["name a schedule, or give --file or --list"]),
    (["1f1b", "--file", "x.csv"], ["give a schedule name or --file, not both"]),
    (["1f1b", "--ranks", "x"], ["argument --ranks: invalid int value: 'x'"]),
    (["1f1b", "--comm", "eager"], ["argument --comm: invalid choice"]),
    (["1f1b", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], words: list[str]) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr


@pytest.mark.parametrize("text, words", [
    ("0F0,0B0\n1F0,1Q0\n", ["rank 1, column 2", "'1Q0'"]),
    ("0UNSHARD,0F0,0B0\n", ["UNSHARD is not part of this IR"]),
    ("0F0\n", ["backward 0B0 (or 0I0 + 0W0) is missing"]),  # loads, fails validation
    ("0RECV_B0,0F0,0SEND_F0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n", ["deadlock under async communication"]),
])
def test_bad_files_are_one_line_and_exit_2(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    done = run("--file", str(path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_unwritable_csv(tmp_path: Path) -> None:
    # A missing folder is made, as every command does for its outputs; /proc takes no file.
    done = run("gpipe", "--csv", "/proc/no/dir/x.csv")
    assert done.returncode == 2 and "cannot write" in done.stderr and done.stderr.count("\n") == 1
    done = run("gpipe", "--csv", str(tmp_path / "no" / "dir" / "x.csv"))
    assert done.returncode == 0 and (tmp_path / "no" / "dir" / "x.csv").exists()


def test_main_in_process(capsys) -> None:
    assert cli.main(["gpipe", "--ranks", "2", "--microbatches", "2"]) == 0
    assert "(p - 1)" not in capsys.readouterr().out  # plain numbers, no formula text
    assert cli.main(["nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown schedule")
