"""The CUDA path, as far as a CPU can check it: rows around staging (a staged wire of CPU
tensors takes the same code path as pinned staging), the wait for the device, the
per-step memory bookkeeping, the profile's layouts owning their layers, and
bench/gpu_check.sh: its syntax, its dry run, its refusal without a GPU, and its whole
flow in --smoke mode on CPU run outputs (mpi)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from mpi4py import MPI

import schedules
from executor.config import RunConfig
from executor.results import profile as profile_module
from executor.engine.plan import plan, stage_shapes
from executor.engine.steps import STAGING_COLUMNS, _device_record
from executor.results.device import device_keys
from executor.record.timing import Recorder
from executor.transport import progress as progress_module
from executor.transport.p2p import AsyncLinks, BlockingLinks
from executor.transport.progress import Progress, check_thread_level
from executor.transport.tags import TagPlan
from executor.transport.wire import Wire
from schedules import Op

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
SHAPE = (2048, 2048)  # 16 MiB of float32: a copy long enough to tell its span from the post


def _links(cls, wire: Wire, recorder: Recorder):
    """Stage 0 and stage 1 on this one rank, talking to itself over COMM_SELF."""
    boundary = [(SHAPE, torch.float32), (SHAPE, torch.float32)]
    tags = TagPlan.fit(2, 1, MPI.COMM_SELF.Get_attr(MPI.TAG_UB))
    return cls(MPI.COMM_SELF, (0, 0), tags, boundary, wire, recorder, Progress())


def _send_then_receive(cls, staged: bool):
    recorder = Recorder()
    links = _links(cls, Wire(torch.device("cpu"), staged=staged), recorder)
    ops = (Op.parse("0SEND_F0"), Op.parse("1RECV_F0"))
    routes = links.routes(ops)
    sent = torch.randn(SHAPE)
    recorder.begin_step()
    links.begin_step(ops, routes)
    links.send(ops[0], routes[0], sent)
    links.recv(ops[1], routes[1])
    links.end_step()
    rows = {row[3]: row for row in recorder.rows}
    copies = {c[3]: c for c in recorder.copies}
    return sent, links.mailbox.pop(("F", 0, 0)), rows, copies


@pytest.mark.parametrize("cls", [AsyncLinks, BlockingLinks])
def test_a_send_row_starts_after_its_staging_copy_and_a_recv_row_ends_before_its_copy_in(cls):
    sent, got, rows, copies = _send_then_receive(cls, staged=True)
    assert torch.equal(got, sent)
    d2h, h2d = copies["D2H"], copies["H2D"]
    assert d2h[1:3] == (0, 0) and h2d[1:3] == (1, 0)  # stage, mb of the op each copy belongs to
    assert d2h[4] == h2d[4] == sent.nbytes
    assert d2h[5] < d2h[6] <= rows["SEND_F"][5], (d2h, rows["SEND_F"])  # the copy is no part of the SEND
    assert rows["RECV_F"][6] <= h2d[5] < h2d[6], (rows["RECV_F"], h2d)  # nor of the RECV


@pytest.mark.parametrize("cls", [AsyncLinks, BlockingLinks])
def test_unstaged_transfers_record_no_copies(cls):
    sent, got, rows, copies = _send_then_receive(cls, staged=False)
    assert torch.equal(got, sent) and copies == {}
    assert set(rows) == {"SEND_F", "RECV_F"}


def test_wire_stages_cpu_tensors_only_when_asked():
    x = torch.arange(6, dtype=torch.bfloat16)
    plain = Wire(torch.device("cpu"))
    assert not plain.staged
    for out, span in (plain.stage_out(x), plain.stage_in(x)):
        assert out.data_ptr() == x.data_ptr() and span is None  # the tensor's own memory, no copy
    staged = Wire(torch.device("cpu"), staged=True)
    out, span = staged.stage_out(x[::2])  # not contiguous: made so, then copied
    assert out.is_contiguous() and torch.equal(out, x[::2]) and span[0] <= span[1]
    assert staged.spec(out)[0].nbytes == 3 * 2  # bf16 travels as raw bytes


class _Event:
    """A device event that completes after ``polls`` queries."""

    def __init__(self, polls: int):
        self.left, self.synchronized = polls, False

    def query(self) -> bool:
        self.left -= 1
        return self.left < 0

    def synchronize(self) -> None:
        self.synchronized = True


def test_the_wait_for_the_device_pokes_until_the_event_completes():
    pokes = []
    Wire(torch.device("cpu"), poke=lambda: pokes.append(1)).wait(event := _Event(5))
    assert len(pokes) == 5 and not event.synchronized
    Wire(torch.device("cpu")).wait(event := _Event(5))  # no poke: the boundary policy blocks
    assert event.synchronized and event.left == 5


def test_hooks_on_a_gpu_needs_mpi_calls_from_any_thread(monkeypatch):
    check_thread_level("hooks", "cuda")  # mpi4py asks for THREAD_MULTIPLE: allowed
    monkeypatch.setattr(progress_module.MPI, "Query_thread", lambda: MPI.THREAD_FUNNELED)
    check_thread_level("hooks", "cpu")  # autograd runs a CPU backward on the calling thread
    check_thread_level("idle", "cuda")
    with pytest.raises(RuntimeError, match="THREAD_SERIALIZED"):
        check_thread_level("hooks", "cuda")


class _Allocator:
    """The three counters the recorder reads, driven by hand."""

    def __init__(self):
        self.now, self.high = 0, 0

    def take(self, n: int) -> None:
        self.now += n
        self.high = max(self.high, self.now)

    def reset_peak(self) -> None:
        self.high = self.now

    def allocated(self) -> int:
        return self.now

    def peak(self) -> int:
        return self.high


def _step(recorder: Recorder, allocator: _Allocator, up: int, down: int) -> None:
    recorder.begin_step()
    allocator.take(up)
    allocator.take(-down)
    recorder.end_step()


def test_each_step_has_its_own_baseline_and_peak():
    allocator = _Allocator()
    allocator.take(1000)  # weights
    recorder = Recorder(memory=allocator)
    _step(recorder, allocator, 5000, 5000)  # a warm-up step that reached 6000
    recorder.clear()  # the timed steps begin
    _step(recorder, allocator, 300, 100)  # keeps 200 (say, a workspace)
    _step(recorder, allocator, 400, 400)
    assert recorder.memory_steps == [(1000, 1300), (1200, 1600)]  # the warm-up's 6000 is not a timed peak
    record = _device_record(recorder)
    assert record == {"memory": [(1000, 1300), (1200, 1600)], "mapping_error": []}


def _plan(**changes):
    cfg = replace(RunConfig(width=32, batch=32, layers=4, microbatches=4), **changes)
    return plan(cfg, 2, tag_ub=1 << 20)


def test_summary_keys_give_the_peak_over_each_steps_baseline():
    the_plan = _plan()
    copies = pd.DataFrame([(0, 0, 0, 0, "D2H", 4096, 0.0, 1e-6), (0, 0, 0, 1, "D2H", 4096, 0.0, 3e-6),
                           (1, 0, 1, 0, "H2D", 4096, 0.0, 2e-6)], columns=STAGING_COLUMNS)
    result = SimpleNamespace(plan=the_plan, staging=copies, device=[
        {"memory": [(1000, 1300), (1200, 1600)], "mapping_error": [2e-6, 5e-6]},
        {"memory": [(900, 950), (900, 1900)], "mapping_error": [1e-6]}])
    keys = device_keys(result)
    assert keys["cuda_step_peak_above_baseline_bytes"] == [400, 1000]
    assert keys["cuda_step_baseline_bytes"] == [1100, 900]
    assert keys["cuda_clock_mapping_error_s"] == 5e-6
    assert keys["boundary_bytes"] == [8 * 32 * 4]  # one microbatch of 8 rows x 32 float32
    assert keys["mpi_thread_level"] == "multiple"
    assert keys["staging"]["D2H"]["count"] == 2 and keys["staging"]["D2H"]["median_s"] == pytest.approx(2e-6)
    assert keys["staging"]["H2D"]["gb_per_s"] == pytest.approx(4096 / 2e-6 / 1e9)
    cpu = device_keys(SimpleNamespace(plan=the_plan, staging=None, device=None))
    assert set(cpu) == {"mpi_thread_level", "boundary_bytes"}


def test_every_profile_layout_owns_its_layers():
    """Finding 7 of #19: a layout whose layers another layout's run moved to the device in
    place would plan CPU inputs through device layers. Each layout's plans build their own
    workload, and every layout is planned before any run."""
    cfg = RunConfig(width=32, batch=32, layers=4)
    world = SimpleNamespace(Get_size=lambda: 2)
    one, two = (profile_module._plans(cfg, world, 2, chunks, 4) for chunks in (1, 2))
    layers = [id(layer) for p in (*one, *two) for layer in p.workload.layers]
    assert len(set(layers)) == len(layers)
    for layer in one[0].workload.layers:
        layer.to("meta")  # what moving a run's layers to another device does: in place
    rows = 32 // 4
    assert stage_shapes(two[0].workload, two[0].bounds, rows) == two[0].boundary


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def _script(*args: str, timeout: float = 60, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **env})


def test_dry_run_prints_the_whole_plan_and_runs_nothing(tmp_path):
    done = _script("--dry-run", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "pip install" in text and "--prefix" in text and ".whl/" in text
    assert "transfer_bench.py" in text and "nvidia-smi" in text
    for name in schedules.names():  # the matrix: every built-in schedule, predicted from the profile
        assert f"--schedule {name} " in text, name
    assert " profile " in text and "--costs" in text
    assert text.count("--check") == 4 and "--comm blocking" in text and "--progress boundary" in text
    assert "--width 4096 --batch 4096 --layers 8" in text
    runs = [line for line in text.splitlines() if " -m executor " in line]
    assert runs and all("--timeout 60" in line and line.lstrip().startswith("timeout ") for line in runs)
    assert "gpu_summary.py" in text and "gpu_check.tar.gz" in text
    assert not (tmp_path / "out").exists()


def test_without_a_gpu_the_script_refuses_in_one_line(tmp_path):
    fake = tmp_path / "nvidia-smi"  # what nvidia-smi does where the driver finds no GPU
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    done = _script(str(tmp_path / "out"), PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no GPU" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.mpi
def test_smoke_run_on_cpu_writes_the_archive_and_the_table(tmp_path):
    """The script's whole flow on CPU run outputs: the transfer bench (staging forced), one
    check, one timed run and the summary step; two files come back."""
    out = tmp_path / "out"
    done = _script("--smoke", "--only", "^(transfer|check-small-1f1b|small-1f1b)$", str(out), timeout=600,
                   PYTHON=sys.executable)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.md", "gpu_check.tar.gz"]
    table = (out / "gpu_check.md").read_text()
    assert "check passed" in table
    row = next(line for line in table.splitlines() if line.startswith("| small-1f1b "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) > 0  # measured step (ms)
    assert "GB/s" in table and "skipped" in table  # the transfer table; the steps --only left out
    with tarfile.open(out / "gpu_check.tar.gz") as archive:
        names = archive.getnames()
    assert any(n.endswith("small-1f1b/summary.json") for n in names)
    assert any(n.endswith("transfer.json") for n in names) and any(n.endswith("steps.tsv") for n in names)
