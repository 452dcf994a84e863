"""Hostile input (issue #18): every bad input or fault ends in one line on stderr and its
documented exit code (2 bad input, 1 a failure while running, 130 Ctrl-C), in bounded
time and memory, before any work where the input is to blame.

The cases are one table, :data:`CASES`: the default run calls each command's ``main``
in this process; ``python tests/test_bad_input.py`` runs every case as its own process
under ``ulimit -v 8 GiB`` and a 120 s timeout and prints the table of the issue's closing
note (command, exit code, seconds). Fuzz tests (hypothesis) feed ``Op.parse``, the CSV
reader and the costs.json loader anything at all: each input loads or raises the one
documented error type.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cliguard
import schedules
import schedules.cli
import simulator
import simulator.cli
from schedules import Op, ScheduleError
from simulator import Profile, ProfileError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_profile import _document  # noqa: E402  (a valid costs.json document)

S = ("-m", "schedules")
SIM = ("-m", "simulator")
SWEEP = ("-m", "simulator", "sweep", "--quiet")
ONE = (*SIM, "--schedule", "1f1b")  # most simulator cases vary one flag of this


# ---- the files the cases read -------------------------------------------------------------

def make_fixtures(d: Path) -> None:
    """Every input file the cases name, written into ``d`` (``{d}`` in a case's argv)."""
    d.mkdir(parents=True, exist_ok=True)
    ok = schedules.build("1f1b", ranks=2, microbatches=2)
    schedules.write_csv(ok, d / "ok.csv")
    csvs = {
        "blank_row.csv": "0F0,0B0\n\n1F0,1B0\n",
        "huge_stage.csv": "0F0,0B0\n99999999999F0,99999999999B0\n",
        "huge_mb.csv": "0F0,0B0,0F99999999999999\n",
        "digits_too_long.csv": "0F" + "9" * 5000 + "\n",
        "arabic_digit.csv": "\u0660F\u0660,\u0660B\u0660\n",
        "negative_mb.csv": "0F-1\n",
        "nul.csv": "0F0,\x000B0\n",
        "long_cell.csv": "0F0," + "x" * 200_000 + "\n",
        "reduce_only.csv": "0REDUCE_GRAD\n",
        "empty.csv": "",
        "only_commas.csv": ",,,,\n,,\n",
        "quoted.csv": '"0F0,0B0"\n',
    }
    for name, text in csvs.items():
        (d / name).write_text(text)
    (d / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (d / "folder").mkdir(exist_ok=True)
    (d / "existing.csv").write_text("keep me\n")
    # 100,000 ranks, one stage each, one microbatch (1.5 MB): the 24 GB case
    (d / "ranks100k.csv").write_text("".join(f"{r}F0,{r}B0\n" for r in range(100_000)))
    loop = d / "loop.csv"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    fifo = d / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)  # no writer: reading it must not wait for one

    trace = simulator.simulate(ok).trace
    trace.to_csv(d / "trace.csv", index=False)
    bad_traces = {
        "trace_nan.csv": trace.assign(start=trace["start"].where(trace.index != 2)),
        "trace_negative.csv": trace.assign(start=trace["start"] - 100, end=trace["end"] - 100),
        "trace_rank_abc.csv": trace.assign(rank=trace["rank"].astype(object).where(trace.index != 1, "abc")),
        "trace_end_inf.csv": trace.assign(end=trace["end"].where(trace.index != 0, float("inf"))),
        "trace_kind.csv": trace.assign(kind=trace["kind"].where(trace.index != 0, "X")),
        "trace_no_stage.csv": trace.drop(columns=["stage"]),
        "trace_backwards.csv": trace.assign(start=trace["end"], end=trace["start"]),
        "trace_huge_stage.csv": trace.assign(stage=trace["stage"].where(trace["stage"] != 1, 10 ** 12)),
    }
    for name, frame in bad_traces.items():
        frame.to_csv(d / name, index=False)

    good = _document()
    (d / "costs.json").write_text(json.dumps(good))
    costs = {
        "costs_unknown_field.json": {**good, "latncy": 1e-6},
        "costs_unknown_nested.json": {**good, "links": {**good["links"], "bandwith": 1e9}},
        "costs_link_rank.json": {**good, "links": {**good["links"], "pairs": [
            {"src": 0, "dst": 7, "latency": 1e-6, "bandwidth": 1e9}]}},
        "costs_f_1e308.json": _with_f(good, 1e308),
        "costs_negative.json": _with_f(good, -1.0),
    }
    for name, doc in costs.items():
        (d / name).write_text(json.dumps(doc))
    (d / "costs_nan.json").write_text(json.dumps(good).replace('"comm_interference": 0.1', '"comm_interference": NaN'))
    (d / "costs_deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "costs_big_int.json").write_text('{"version": ' + "9" * 5000 + "}")


def _with_f(doc: dict, value: float) -> dict:
    doc = json.loads(json.dumps(doc))
    for layout in doc["layouts"]:
        for stage in layout["stages"]:
            stage["F"]["alone"] = value
    return doc


# ---- the table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One command (``{d}`` stands for the fixture folder), its exit code and words of its line."""

    argv: tuple[str, ...]
    code: int
    words: str = ""
    fast: bool = True  # in the default run (in this process)

    @property
    def label(self) -> str:
        return " ".join(self.argv)


def c(*argv: str, code: int = 2, words: str = "", fast: bool = True) -> Case:
    return Case(tuple(argv), code, words, fast)


CASES = [
    # -- the list: sizes without a bound --------------------------------------------
    c(*S, "1f1b", "--ranks", "1000000000", words="too large for this machine"),
    c(*S, "1f1b", "--microbatches", "1000000000", words="too large for this machine"),
    c(*S, "interleaved-1f1b", "--chunks", "100000000", words="too large for this machine"),
    c(*S, "--file", "{d}/ranks100k.csv", code=0, fast=False),
    c(*ONE, "--ranks", "1000000000", words="too large for this machine"),
    c(*SIM, "--schedule", "interleaved-1f1b", "--chunks", "100000000", words="too large for this machine"),
    c(*SWEEP, "--schedules", "1f1b", "--ranks", "2", "--microbatches", "2", "--workers", "100000", code=0,
      words="note: --workers 100000: using"),
    # -- lost work: outputs refused when they exist, replaced with --force ---------------------
    c(*S, "1f1b", "--csv", "{d}/existing.csv", words="exists; pass --force"),
    c(*ONE, "--csv", "{d}/existing.csv", words="exists; pass --force"),
    c(*SWEEP, "--schedules", "1f1b", "--ranks", "2", "--microbatches", "2", "--out", "{d}/existing.csv",
      words="exists; pass --force"),
    c(*S, "1f1b", "--csv", "{d}/forced.csv", "--force", code=0),
    # -- tracebacks: output paths --------------------------------------------------------------
    c(*ONE, "--gantt", "/proc/x.png", words="--gantt '/proc/x.png': cannot write there"),
    c(*ONE, "--trace", "/proc/x.json", words="--trace '/proc/x.json': cannot write there"),
    c(*ONE, "--csv", "/proc/x/y.csv", words="cannot create folder '/proc/x'"),
    c(*ONE, "--csv", "{d}/folder", words="is a folder"),
    c(*SWEEP, "--out", "/proc/x.csv", words="--out '/proc/x.csv': cannot write there"),
    c(*SWEEP, "--out", "{d}/folder", words="is a folder"),
    c(*S, "1f1b", "--csv", "/proc/x.csv", words="cannot write there"),
    c(*ONE, "--gantt", "{d}/chart.txt", words="name a picture file"),
    c(*ONE, "--csv", "{d}/same.csv", "--trace", "{d}/same.csv", words="name the same file"),
    c(*ONE, "--csv", "", words="--csv is empty"),
    # -- accepted nonsense ---------------------------------------------------------------------
    c(*ONE, "--costs-from", "{d}/trace_nan.csv", words="start 'nan' is not a finite number"),
    c(*ONE, "--costs-from", "{d}/trace_negative.csv", words="is negative"),
    c(*ONE, "--costs-from", "{d}/trace_rank_abc.csv", words="rank 'abc' is not a whole number"),
    c(*ONE, "--costs-from", "{d}/trace_end_inf.csv", words="end 'inf' is not a finite"),
    c(*ONE, "--costs-from", "{d}/trace_kind.csv", words="kind 'X' is not a kind"),
    c(*ONE, "--costs-from", "{d}/trace_no_stage.csv", words="lacks column(s) stage"),
    c(*ONE, "--costs-from", "{d}/trace_backwards.csv", words="is before start"),
    c(*ONE, "--costs", "{d}/costs_unknown_field.json", words="latncy is not a key"),
    c(*ONE, "--costs", "{d}/costs_unknown_nested.json", words="links.bandwith is not a key"),
    c(*ONE, "--costs", "{d}/costs_link_rank.json", words="links.pairs[0].dst is rank 7"),
    c(*ONE, "--ranks", "2", "--microbatches", "4", "--costs", "{d}/costs_f_1e308.json",
      words="add up past what a float holds"),
    c(*ONE, "--t-f", "1e308", words="add up past what a float holds"),
    c(*S, "--file", "{d}/blank_row.csv", words="row 2 is blank but more ranks follow"),
    c(*SIM, "--schedule-file", "{d}/ok.csv", "--ranks", "8", "--microbatches", "32",
      words="--ranks is set by the schedule file"),
    c(*S, "--file", "{d}/ok.csv", "--microbatches", "32", words="--microbatches is set by the schedule file"),
    # -- numbers in every numeric flag ------------------------------------------------------------
    c(*S, "1f1b", "--ranks", "-5", words="ranks must be a whole number >= 1"),
    c(*S, "1f1b", "--ranks", "nan", words="invalid int value"),
    c(*S, "1f1b", "--ranks", "1e9", words="invalid int value"),
    c(*S, "1f1b", "--ranks", "9" * 5000, words="invalid int value"),
    c(*S, "1f1b", "--ranks", str(10 ** 40), words="too large for this machine"),
    c(*S, "1f1b", "--chunks", "0", words="chunks must be 1"),
    c(*S, "zb-auto", "--t-f", "nan", words="t_f must be a finite number > 0"),
    c(*S, "zb-auto", "--t-w", "inf", words="t_w must be a finite number > 0"),
    c(*S, "zb-auto", "--t-i", "-1", words="t_i must be a finite number > 0"),
    c(*S, "zb-auto", "--memory-limit", "nan", words="memory_limit must be a finite number"),
    c(*S, "zb-auto", "--memory-limit", "0.5", words="memory_limit must be >= 1"),
    c(*S, "zb-auto", "--t-comm=-inf", words="t_comm must be a finite number >= 0"),
    c(*S, "zb-auto", "--t-comm", "-inf", words="argument --t-comm: expected one argument"),
    c(*S, "zb-auto", "--chunks", "2", words="drop --chunks"),
    c(*S, "1f1b", "--memory-limit", "4", words="--memory-limit is a zb-auto flag"),
    c(*ONE, "--t-f", "nan", words="Costs.t_f must be >= 0"),
    c(*ONE, "--t-f", "inf", words="Costs.t_f must be finite"),
    c(*ONE, "--t-f", "1,nan,1,1", words="Costs.t_f must be >= 0"),
    c(*ONE, "--t-f", "1,,1", words="expected a number or comma-separated numbers"),
    c(*ONE, "--bandwidth", "nan", words="Costs.bandwidth must be > 0"),
    c(*ONE, "--bandwidth", "-1", words="Costs.bandwidth must be > 0"),
    c(*ONE, "--latency", "inf", words="Costs.latency must be finite"),
    c(*ONE, "--act-bytes", "1e308", "--bandwidth", "1e-308",
      words="add up past what a float holds"),
    c(*ONE, "--dp", "0", words="Costs.dp must be a whole number >= 1"),
    c(*ONE, "--dp", "1000000000", words="too large for this machine"),
    c(*ONE, "--ranks-per-node", "0", words="ranks_per_node must be a whole number >= 1"),
    c(*ONE, "--share", "0", words="Costs.share must be > 0"),
    c(*ONE, "--share", "nan", words="Costs.share must be > 0"),
    c(*ONE, "--comm-interference", "1", words="comm_interference must be within [0, 1)"),
    c(*ONE, "--w-memory-fraction", "2", words="within [0, 1]"),
    c(*ONE, "--optimizer-time", "-1", words="Costs.optimizer_time must be >= 0"),
    c(*ONE, "--microbatches", "-3", words="microbatches must be a whole number >= 1"),
    c(*SIM, "--schedule", "zb-auto", "--memory-limit", "inf", words="memory_limit must be a finite number"),
    c(*ONE, "--t-comm", "1", words="--t-comm is a zb-auto flag"),
    c(*SWEEP, "--ranks", "2,2", words="--ranks names 2 twice"),
    c(*SWEEP, "--ranks", "2,-4", words="values must be >= 1"),
    c(*SWEEP, "--microbatches", "1000000000", words="too large for this machine"),
    c(*SWEEP, "--workers", "0", words="--workers must be >= 1"),
    c(*SWEEP, "--schedules", "1f1b", "--chunks", "3", words="--chunks applies to multi-chunk schedules only"),
    c(*SWEEP, "--schedules", "1f1b", "--comm", "async,sometimes", words="--comm takes async, blocking"),
    # -- files that are no schedule, trace or costs.json ------------------------------------------
    c(*S, "--file", "{d}/empty.csv", words="no ranks"),
    c(*S, "--file", "{d}/only_commas.csv", words="no ranks"),
    c(*S, "--file", "{d}/binary.bin", words="not a CSV schedule"),
    c(*S, "--file", "{d}/folder", words="it is a folder"),
    c(*S, "--file", "{d}/fifo", words="no ranks"),
    c(*S, "--file", "/proc/self/mem", words="cannot read schedule file"),
    c(*S, "--file", "{d}/nope.csv", words="No such file"),
    c(*S, "--file", "{d}/huge_stage.csv", words="stage 1 appears on no rank"),
    c(*S, "--file", "{d}/huge_mb.csv", words="forward 0F1 is missing"),
    c(*S, "--file", "{d}/digits_too_long.csv", words="at most 18 digits"),
    c(*S, "--file", "{d}/arabic_digit.csv", words="cannot parse action"),
    c(*S, "--file", "{d}/negative_mb.csv", words="cannot parse action '0F-1'"),
    c(*S, "--file", "{d}/nul.csv", words="cannot parse action"),
    c(*S, "--file", "{d}/long_cell.csv", words="not a CSV schedule"),
    c(*S, "--file", "{d}/reduce_only.csv", words="no action names a microbatch"),
    c(*S, "--file", "{d}/quoted.csv", words="cannot parse action '0F0,0B0'"),
    c(*ONE, "--costs-from", "{d}/empty.csv", words="cannot read trace"),
    c(*ONE, "--costs-from", "{d}/binary.bin", words="not a trace CSV"),
    c(*ONE, "--costs-from", "{d}/folder", words="it is a folder"),
    c(*ONE, "--costs-from", "{d}/fifo", words="cannot read trace"),
    c(*ONE, "--costs", "{d}/empty.csv", words="is not a costs.json"),
    c(*ONE, "--costs", "{d}/binary.bin", words="not a costs.json"),
    c(*ONE, "--costs", "{d}/folder", words="it is a folder"),
    c(*ONE, "--costs", "{d}/costs_nan.json", words="NaN is not a number JSON allows"),
    c(*ONE, "--costs", "{d}/costs_deep.json", words="nested deeper than Python can read"),
    c(*ONE, "--costs", "{d}/costs_big_int.json", words="is not a costs.json"),
    c(*ONE, "--costs", "{d}/costs_negative.json", words="must be a finite number >= 0"),
    c(*SIM, "--schedule-file", "{d}/binary.bin", words="not a CSV schedule"),
    # -- duplicate and contradicting flags ---------------------------------------------------------
    c(*S, "1f1b", "--ranks", "4", "--ranks", "8", words="argument --ranks: given twice (4, then 8)"),
    c(*ONE, "--t-f", "1", "--t-f=2", words="argument --t-f: given twice"),
    c(*ONE, "--schedule", "gpipe", words="argument --schedule: given twice"),
    c(*ONE, "--schedule-file", "{d}/ok.csv", words="not allowed with argument"),
    c(*S, "--list", "--ranks", "3", words="--list takes no other argument"),
    c(*S, "1f1b", "--file", "{d}/ok.csv", words="give a schedule name or --file, not both"),
    # -- more found by trying -----------------------------------------------------------------------
    c(*ONE, "--costs-from", "{d}/trace_huge_stage.csv", words="no compute rows for stage 1"),
    c(*ONE, "--csv", "{d}/existing.csv/x.csv", words="cannot create folder"),
    c(*S, "--file", "{d}/ok.csv", "--csv", "{d}/ok.csv", words="exists; pass --force"),
    c(*S, "--file", "{d}/loop.csv", words="cannot read schedule file"),
    c(*SWEEP, "--ranks", "", words="expected comma-separated whole numbers"),
    c(*ONE, "--share", "", words="expected a number or comma-separated numbers"),
    c(*ONE, "--t-f", "1e309", words="Costs.t_f must be finite"),
    c(*SIM, words="one of the arguments --schedule --schedule-file is required"),
    c(*SIM, "--schedule", "zb-auto", "--chunks", "2", words="--chunks does not apply"),
    c(*SIM, "--schedule", "nope", words="invalid choice"),
    c(*S, "1f1b", "--comm", words="expected one argument"),
]


# ---- running a case -------------------------------------------------------------------------

def _argv(case: Case, d: Path) -> list[str]:
    return [a.replace("{d}", str(d)) for a in case.argv]


def _main_of(module: str):
    return {"schedules": schedules.cli.main, "simulator": simulator.cli.main}[module]


def check(case: Case, code: int, err: str) -> None:
    """The documented code; on failure exactly one line, no traceback, the case's words in it."""
    assert "Traceback" not in err, err
    assert code == case.code, f"exit {code}, expected {case.code}: {err}"
    if case.code != 0:
        assert err.count("\n") == 1 and err.endswith("\n"), err
    assert case.words in err, err


def run_process(case: Case, d: Path, memory: int = 8 << 30, timeout: float = 120.0) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of the case as its own process, under ``ulimit -v``."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    began = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *_argv(case, d)], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired as err:
        return 124, (err.stderr or b"").decode() if isinstance(err.stderr, bytes) else (err.stderr or ""), timeout
    return done.returncode, done.stderr, time.perf_counter() - began


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    make_fixtures(folder)
    return folder


@pytest.mark.parametrize("case", [x for x in CASES if x.fast], ids=lambda x: x.label[:90])
def test_case(case: Case, d: Path, capsys) -> None:
    argv = _argv(case, d)
    code = _main_of(argv[1])(argv[2:])
    check(case, code, capsys.readouterr().err)


@pytest.mark.parametrize("case", [x for x in CASES if not x.fast], ids=lambda x: x.label[:90])
def test_slow_case_as_a_process(case: Case, d: Path) -> None:
    code, err, _ = run_process(case, d)
    check(case, code, err)


def test_entry_points_as_processes(d: Path) -> None:
    """``python -m`` itself: one line and the code, as ``main`` gives them in this process."""
    picked = [x for x in CASES if x.words in ("too large for this machine", "--gantt '/proc/x.png': cannot write there",
                                              "not a CSV schedule", "argument --ranks: given twice (4, then 8)")]
    for case in picked[:4]:
        code, err, seconds = run_process(case, d)
        check(case, code, err)
        assert seconds < 60


# ---- Ctrl-C, and failures at the end --------------------------------------------------------

def default_sigint() -> None:
    """In a child before it starts: Ctrl-C's default action, even where this test runs with
    SIGINT ignored (a shell's background job), which a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(argv: list[str], after: float = 3.0) -> tuple[int, str, float]:
    """Start ``argv`` in a session of its own, Ctrl-C the whole group (as a terminal does)
    after ``after`` seconds; (exit code, stderr, seconds from Ctrl-C until it ended)."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=default_sigint)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    sent = time.perf_counter()
    _, err = proc.communicate(timeout=60)  # stderr closes when the last process of the group holding it ends
    return proc.returncode, err, time.perf_counter() - sent


@pytest.mark.parametrize("argv, prog", [
    (["-m", "schedules", "1f1b", "--ranks", "64", "--microbatches", "8192"], "python -m schedules"),
    (["-m", "simulator", "--schedule", "1f1b", "--ranks", "64", "--microbatches", "8192"], "python -m simulator"),
    (["-m", "simulator", "sweep", "--schedules", "zb-h1", "--ranks", "64", "--microbatches", "1024,2048,4096,8192",
      "--workers", "2", "--quiet"], "python -m simulator"),
])
def test_ctrl_c_is_one_line_and_130(argv: list[str], prog: str) -> None:
    """A pool's workers end too, at once, rather than finish their jobs (it took 49 s)."""
    code, err, seconds = _interrupt(argv)
    assert code == 130 and err == f"{prog}: interrupted\n", err
    assert seconds < 10


def test_an_output_that_fails_at_the_end_is_saved_elsewhere(tmp_path: Path, monkeypatch, capsys) -> None:
    """Disk full while the Gantt chart is written: the CSV is still written, the chart
    goes to a temporary folder, the summary is printed, and the one line says where."""
    import timeline.gantt

    def full(trace, path, **kwargs):
        Path(path).write_bytes(b"half")
        if "pipebubble-saved-" not in str(path):
            raise OSError(28, "No space left on device")
        Path(path).write_bytes(b"whole")

    monkeypatch.setattr(timeline.gantt, "plot_gantt", full)
    code = simulator.cli.main(["--schedule", "1f1b", "--ranks", "2", "--microbatches", "2",
                               "--csv", str(tmp_path / "t.csv"), "--gantt", str(tmp_path / "g.png")])
    out, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1, err
    assert "makespan" in out and (tmp_path / "t.csv").exists() and not (tmp_path / "g.png").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "t.csv"]  # no half-written temporary file left
    saved = Path(err.split("saved instead to ")[1].split("'")[1])
    assert saved.read_bytes() == b"whole" and f"written: {tmp_path / 't.csv'}" in err


def test_a_forced_output_that_fails_keeps_the_old_file(tmp_path: Path) -> None:
    old = tmp_path / "table.csv"
    old.write_text("the old table\n")

    def broken(path: Path) -> None:
        path.write_text("half a tab")
        if path.parent == tmp_path:  # the disk of --out fails, the temporary folder's does not
            raise OSError(5, "Input/output error")

    with pytest.raises(cliguard.SaveError, match="--out .*Input/output error.*saved instead to"):
        cliguard.save_all([("--out", old, broken)])
    assert old.read_text() == "the old table\n" and list(tmp_path.iterdir()) == [old]


def test_probe_errors_name_the_path_given() -> None:
    with pytest.raises(cliguard.UsageError, match=r"^--gantt '/proc/x.png': cannot write there"):
        cliguard.claim_file("/proc/x.png", flag="--gantt")


def test_memory_available_follows_ulimit() -> None:
    """A bound of ``ulimit -v`` is what this process may allocate, whatever MemAvailable says."""
    code = ("import resource, cliguard; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "print(cliguard.memory_available())")
    room = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < room < 2 << 30


def test_workers_are_capped_at_the_cores(capsys) -> None:
    from simulator.workers import capped

    assert capped(cliguard.usable_cores()) == cliguard.usable_cores() and capsys.readouterr().err == ""
    assert capped(100_000) == cliguard.usable_cores()
    assert "note: --workers 100000: using" in capsys.readouterr().err


# ---- fuzz: every input loads or raises the documented error ----------------------------------

_ACTION_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda stage, kind, mb: f"{stage}{kind}{mb}",
              st.one_of(st.integers(0, 30).map(str), st.text("0123456789-+ \u0663", max_size=25)),
              st.sampled_from([k.value for k in schedules.OpKind] + ["UNSHARD", "RESHARD", "X", ""]),
              st.one_of(st.integers(0, 30).map(str), st.just(""), st.text("0123456789 \u0663.", max_size=25))),
)
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(st.one_of(_ACTION_TEXT, st.builds(lambda a, b: f"({a};{b})OVERLAP_F_B", _ACTION_TEXT, _ACTION_TEXT)))
def test_op_parse_reads_its_own_text_or_raises_schedule_error(text: str) -> None:
    try:
        op = Op.parse(text)
    except ScheduleError as err:
        assert "\n" not in str(err)
        return
    assert Op.parse(str(op)) == op


_CELL = st.one_of(_ACTION_TEXT, st.sampled_from(["0F0", "0B0", "1F0", "1B0", "0I0", "0W0", "1SEND_F0", "",
                                                 '"', "\x00", "\r", ";", "(0F0;1B0)OVERLAP_F_B"]))
_CSV_TEXT = st.lists(st.lists(_CELL, max_size=6).map(",".join), max_size=6).map("\n".join)


@_FUZZ
@given(st.one_of(_CSV_TEXT, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_csv_reader_loads_or_raises_schedule_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        loaded = schedules.load_csv(path)
    except ScheduleError as err:
        assert "\n" not in str(err)
        return
    for comm in schedules.COMM_MODES:  # what loads also validates or is refused, never crashes
        try:
            schedules.validate(loaded, comm)
        except ScheduleError:
            pass


def _mutations(draw, value, depth=0):
    """A copy of ``value`` with a few keys dropped, changed, added or retyped."""
    if isinstance(value, dict) and draw(st.booleans()):
        value = dict(value)
        keys = list(value)
        choice = draw(st.integers(0, 4))
        if keys and choice == 0:
            del value[draw(st.sampled_from(keys))]
        elif choice == 1:
            value[draw(st.text(max_size=8))] = draw(_JSON_LEAF)
        elif keys:
            key = draw(st.sampled_from(keys))
            value[key] = _mutations(draw, value[key], depth + 1) if choice < 4 else draw(_JSON_LEAF)
        return value
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + [_mutations(draw, value[i], depth + 1)] + value[i + 1:]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and draw(st.booleans()):
        return draw(_JSON_LEAF)
    return value


_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 20), st.floats(allow_nan=False),
                       st.text(max_size=5), st.just([]), st.just({}))


@_FUZZ
@given(st.data())
def test_costs_json_loads_or_raises_profile_error(tmp_path: Path, data) -> None:
    shape = data.draw(st.integers(0, 2))
    if shape == 0:
        text = json.dumps(_mutations(data.draw, _document()))
    elif shape == 1:
        text = json.dumps(data.draw(st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                                                 | st.dictionaries(st.text(max_size=5), inner, max_size=3))))
    else:
        text = data.draw(st.binary(max_size=100)).decode("latin-1")
    path = tmp_path / "costs.json"
    path.write_text(text)
    try:
        profile = Profile.load(path)
    except ProfileError as err:
        assert "\n" not in str(err)
        return
    for ranks, chunks, m, dp in profile.layouts:  # what loads gives costs, or says why not
        try:
            profile.costs(ranks=ranks, chunks=chunks, microbatches=m, dp=dp)
        except ProfileError:
            pass


# ---- the closing note's table ----------------------------------------------------------------

def main() -> int:
    """Every case as its own process (ulimit -v 8 GiB, 120 s): command, exit code, seconds."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_fixtures(d)
        print("| command | exit (expected) | seconds | line |\n|---|---|---|---|")
        failed = 0
        for case in CASES:
            code, err, seconds = run_process(case, d)
            try:
                check(case, code, err)
                mark = ""
            except AssertionError:
                failed += 1
                mark = " FAILED"
            line = err.strip().splitlines()[-1] if err.strip() else ""
            shown = " ".join(a if len(a) <= 40 else f"{a[:12]}...({len(a)} characters)" for a in case.argv)
            shown = shown.replace("{d}/", "").replace("|", "\\|")
            print(f"| `{shown}` | {code} ({case.code}){mark} | {seconds:.2f} | {line[:100].replace('|', '/')} |",
                  flush=True)
    print(f"\n{len(CASES)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
