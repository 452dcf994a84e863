"""Bad input to the executor, table-driven: one line naming what is wrong, the documented
exit code, in bounded time, and nothing written or replaced (issue 18's cases and more).

Fast cases parse arguments only; the MPI cases launch the bundled mpiexec with 2 ranks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from executor.config import UsageError, parse_args, parse_profile_args
from executor.launch import MPIEXEC, launch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv,words", [
    (["--seed", "99999999999999999999999"], "torch's seed is 64 bits"),
    (["--seed", "-1"], "must be in 0 .. 2**63 - 1"),
    (["--threads", "100000"], "more threads than cores"),
    (["--lr", "nan"], "finite number"),
    (["--lr", "inf"], "finite number"),
    (["--t-f", "inf", "--compute", "sleep"], "finite time"),
    (["--t-f", "1e300", "--compute", "sleep"], "longer than this Python can sleep"),
    (["--timeout", "nan"], "finite time"),
    (["--memory-limit", "-3"], "finite number >= 0"),
    (["--canary"], "--canary scales the prediction of --costs"),
    (["--microbatches", "0"], "must be >= 1"),
    (["--schedule", "gpipe", "--schedule-file", "x.csv"], "not allowed with"),
    (["--schedule-file", "x.csv", "--chunks", "2"], "the file fixes"),
])
def test_bad_arguments_are_one_line(argv, words):
    with pytest.raises(UsageError, match=None) as caught:
        parse_args(argv)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_profile_arguments_are_checked_like_a_runs():
    with pytest.raises(UsageError, match="torch's seed is 64 bits"):
        parse_profile_args(["--seed", str(2**64)])


def _executor(*args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    done = launch(2, list(args), timeout=timeout, capture=True, cwd=ROOT)
    return done, time.perf_counter() - began


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


SMALL = ["--width", "32", "--batch", "32", "--layers", "4"]


@pytest.mark.mpi
@pytest.mark.parametrize("args,words", [
    (["--microbatches", "1000000000", "--batch", "64"], "does not divide into dp x microbatches"),
    (["--width", "100000000"], "GiB available"),
    (["--chunks", "100000000"], "fewer than its 200000000 model stages"),
    (["--model", "tests.executor_factories:exits", "--microbatches", "2"], "called sys.exit(0)"),
    (["--schedule-file", "tests"], "tests"),
    (["--costs", "README.md", *SMALL], "README.md"),
    (["--out", "/proc/x", *SMALL], "/proc/x"),
    (["profile", "--chunks", "4", "--layers", "2", *SMALL[:4]], "too few for 2 ranks x chunks 4"),
    (["profile", "--microbatches", "3", "--batch", "16", "--width", "32"], "does not divide"),
    (["profile", "--out", "/proc/x", *SMALL], "/proc/x"),
])
def test_bad_input_is_refused_before_any_work(args, words):
    done, took = _executor(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in _one_line(done.stderr)
    assert took < 30


@pytest.mark.mpi
def test_an_existing_output_is_never_replaced_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("an earlier run's")
    done, took = _executor("--schedule", "1f1b", "--microbatches", "4", *SMALL, "--out", str(out))
    assert done.returncode == 2 and "pass --force" in _one_line(done.stderr) and took < 30
    assert (out / "summary.json").read_text() == "an earlier run's"
    (tmp_path / "file").write_text("x")
    done, _ = _executor("--schedule", "1f1b", "--microbatches", "4", *SMALL, "--out", str(tmp_path / "file"))
    assert done.returncode == 2 and "is a file" in _one_line(done.stderr)
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "costs.json").write_text("{}")
    done, _ = _executor("profile", *SMALL, "--out", str(profile))
    assert done.returncode == 2 and "pass --force" in _one_line(done.stderr)
    assert (profile / "costs.json").read_text() == "{}"
    done, _ = _executor("--schedule", "1f1b", "--microbatches", "4", *SMALL, "--no-predict", "--steps", "1",
                        "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "summary.json").read_text() != "an earlier run's"


@pytest.mark.mpi
def test_a_stalled_rank_ends_the_job_from_the_first_step_without_a_timeout():
    done, took = _executor("--schedule", "1f1b", "--microbatches", "4", *SMALL, "--warmup", "0", "--stall-rank", "1",
                           "--no-predict", "--out", "/tmp/pipebubble-stall-never-written", timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "stalled on purpose" in done.stderr and took < 60  # the first step's limit, not 300 s


@pytest.mark.mpi
def default_sigint() -> None:
    """Ctrl-C's default action in mpiexec and its ranks, even where this test runs with SIGINT
    ignored (a shell's background job), which they would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_every_rank_with_130_and_one_line(tmp_path):
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "executor", "--schedule", "1f1b", "--microbatches", "4",
           *SMALL, "--steps", "100000", "--no-predict", "--out", str(tmp_path / "run")]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=default_sigint) as proc:
        time.sleep(8)  # well into the timed steps
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-2000:]
    assert _one_line(stderr) == "executor: interrupted; ending every rank"
