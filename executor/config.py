"""The executor's options: one frozen dataclass and the argparse CLI that fills it.

Every flag name is part of the contract of the executor issue; defaults suit a laptop CPU.
Parsing touches no MPI: all checks that can be made from the arguments alone happen on
every rank before any communication (see :mod:`executor.engine.plan`).
"""

from __future__ import annotations

import argparse
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from cliguard import UsageError  # arguments that cannot work: one line, exit 2 (one class for every CLI)
from schedules import COMM_MODES

__all__ = ["RunConfig", "UsageError", "parse_args", "build_parser", "ProfileOptions", "parse_profile_args"]


@dataclass(frozen=True)
class RunConfig:
    """One executor run. Times are milliseconds on the command line, seconds here."""

    schedule: str = "1f1b"
    """Built-in schedule name (ignored when ``schedule_file`` is given)."""
    schedule_file: str | None = None
    """torch-format CSV (compute_only or compute_comms) to run instead of a built-in."""
    microbatches: int = 8
    """m: microbatches per step per data-parallel replica."""
    chunks: int | None = None
    """Model stages per rank (v); None: the schedule's default."""
    dp: int = 1
    """Data-parallel degree D: world size = pipeline ranks x D."""
    model: str = "mlp"
    """mlp, transformer, or package.module:factory returning (model, inputs, targets, loss_fn)."""
    layers: int = 8
    """Layers of the built-in models."""
    width: int = 512
    """Hidden width (d_model for the transformer)."""
    batch: int = 512
    """Rows in the full batch (all replicas together); must divide by dp x microbatches."""
    seq_len: int = 16
    """Sequence length of the built-in transformer."""
    heads: int = 4
    """Attention heads of the built-in transformer."""
    balance: tuple[int, ...] | None = None
    """Layers per model stage; None: balanced by parameter count."""
    steps: int = 5
    """Timed steps."""
    warmup: int = 2
    """Untimed steps run first (allocator, caches, first-touch pages)."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    dtype: str = "float32"
    """float32, float64 or bfloat16."""
    comm_mode: str = "async"
    """``--comm``: async or blocking, the two semantics of schedules.lowering."""
    compute: str = "real"
    """real, or sleep: timed sleeps instead of compute, activation-sized buffers still move."""
    t_f: float = 0.010
    """Sleep per forward (s) under compute=sleep."""
    t_i: float = 0.005
    """Sleep per backward-for-inputs (s); a full backward B sleeps t_i + t_w."""
    t_w: float = 0.005
    """Sleep per backward-for-weights (s)."""
    out: str | None = None
    """Output folder, new or empty unless ``force``; None: a new folder
    out/run-<schedule>-p<P>-m<M>-<date>-<time>/ and the link out/run-<schedule>-p<P>-m<M> to it."""
    force: bool = False
    """Write into an output folder that already holds files (replacing the run's own)."""
    check: bool = False
    """Compare loss and gradients of one step with a single-process run; exit 1 on mismatch."""
    seed: int = 0
    """Seed for model weights and data (identical on every rank)."""
    threads: int | None = None
    """torch threads per rank; None: cores of the node // ranks on the node, at least 1."""
    lr: float = 1e-3
    """SGD learning rate of the optimizer step that closes each step."""
    predict: bool = True
    """Calibrate the simulator from the trace and print predicted against measured."""
    fail_rank: int | None = None
    """Testing aid: this world rank raises an exception halfway through the first step."""
    progress: str = "idle"
    """How transfers progress during compute: idle (main thread, at op boundaries and
    wherever the host waits for the device: sleeping stages' slices), hooks (idle, and
    between the layers of a real stage too), boundary (op boundaries only), thread (a
    200 us polling thread) or mpich (MPICH's async progress)."""
    recv_window: int | None = None
    """async: receives pre-posted ahead of the rank; None: 2 x pipeline ranks."""
    timeout: float | None = None
    """Watchdog (s) per step; None: 300 s until warm-up has run, then 10 x the predicted step."""
    stall_rank: int | None = None
    """Testing aid: this world rank sleeps forever at its first op of the second step."""
    t_comm: float | None = None
    """zb-1p, zb-2p, zb-auto: communication time per hop (s) they are built for; None: the
    profile's slowest boundary transfer with --costs, else 0."""
    memory_limit: float | None = None
    """zb-auto: activations a stage may hold, in microbatches; None: 2 x ranks (ZB-2p)."""
    costs: str | None = None
    """costs.json of ``executor profile``: the table adds the step predicted from it before the run."""
    cpu_times: bool = False
    """Also record each compute op's thread CPU time (the profile does where ranks outnumber cores)."""
    canary: bool = False
    """With ``costs``: scale the profile's compute costs by the canary's drift since the
    profile (the canary is timed just before the timed steps)."""
    inflation: bool = False
    """Before the timed steps, time every op of every stage alone (other ranks idle) and
    report the in-run median over it."""

    @property
    def schedule_label(self) -> str:
        return Path(self.schedule_file).stem if self.schedule_file else self.schedule

    def out_dir(self, ranks: int) -> Path:
        if self.out:
            return Path(self.out)
        return Path("out") / f"run-{self.schedule_label}-p{ranks}-m{self.microbatches}"


SEED_LIMIT = 2**63  # torch.manual_seed takes a 64-bit integer; Python ints beyond it overflow there
SLEEP_LIMIT_S = threading.TIMEOUT_MAX  # the longest a Python sleep or wait can last (time.sleep overflows beyond)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**63 - 1 (torch's seed is 64 bits), got {text}")
    return value


def _threads(text: str) -> int:
    value = _positive(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} threads a rank, but this machine gives the process {cores} "
                                         f"cores: more threads than cores only queue for them")
    return value


def _finite(text: str, low: float, what: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= low):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def _millis(text: str) -> float:
    value = _finite(text, 0.0, "a finite time >= 0 ms") / 1000.0
    if value > SLEEP_LIMIT_S:
        raise argparse.ArgumentTypeError(f"{text} ms is longer than this Python can sleep ({SLEEP_LIMIT_S:.3g} s)")
    return value


def _seconds(text: str) -> float:
    value = _finite(text, 0.0, "a finite time > 0 s")
    if not 0 < value <= SLEEP_LIMIT_S:
        raise argparse.ArgumentTypeError(f"must be a time > 0 s and at most {SLEEP_LIMIT_S:.3g} s, got {text}")
    return value


def _rate(text: str) -> float:
    return _finite(text, 0.0, "a finite number >= 0")


def _whole_numbers(what: str, example: str, below_one: str):
    """An argparse type for comma-separated whole numbers >= 1."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like {example}, got {text!r}") from None
        if any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{below_one}, got {text!r}")
        return values
    return parse


_balance = _whole_numbers("layer counts", "3,2,3", "every stage needs at least one layer")
_counts = _whole_numbers("counts", "1,2", "counts must be >= 1")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, without argparse's usage block
        raise UsageError(message)


def build_parser(conflict_handler: str = "error") -> argparse.ArgumentParser:
    d = RunConfig()
    p = _Parser(prog="python -m executor", description="Run a pipeline schedule for real under mpiexec.",
                conflict_handler=conflict_handler)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--schedule", default=d.schedule, help="built-in schedule name (default %(default)s)")
    what.add_argument("--schedule-file", help="torch-format CSV schedule to run")
    p.add_argument("--microbatches", type=_positive, default=d.microbatches, help="microbatches per step (default %(default)s)")
    p.add_argument("--chunks", type=_positive, help="model stages per rank (default: the schedule's)")
    p.add_argument("--dp", type=_positive, default=d.dp, help="data-parallel replicas; world = pipeline ranks x dp")
    p.add_argument("--model", default=d.model, help="mlp, transformer or package.module:factory")
    p.add_argument("--layers", type=_positive, default=d.layers, help="layers of the built-in model")
    p.add_argument("--width", type=_positive, default=d.width, help="hidden width / d_model")
    p.add_argument("--batch", type=_positive, default=d.batch, help="rows of the full batch")
    p.add_argument("--seq-len", type=_positive, default=d.seq_len, help="transformer sequence length")
    p.add_argument("--heads", type=_positive, default=d.heads, help="transformer attention heads")
    p.add_argument("--balance", type=_balance, help="layers per model stage, e.g. 3,2,3 (default: by parameter count)")
    p.add_argument("--steps", type=_positive, default=d.steps, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps before them (default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device,
                   help="auto: CUDA when a GPU is visible, else CPU (default %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64", "bfloat16"), default=d.dtype,
                   help="parameter and activation dtype (default %(default)s)")
    p.add_argument("--comm", dest="comm_mode", choices=COMM_MODES, default=d.comm_mode,
                   help="communication semantics")
    p.add_argument("--compute", choices=("real", "sleep"), default=d.compute, help="sleep: timed sleeps, real transfers")
    p.add_argument("--t-f", type=_millis, default=d.t_f, help="sleep per forward, ms (compute=sleep)")
    p.add_argument("--t-i", type=_millis, default=d.t_i, help="sleep per input-backward, ms")
    p.add_argument("--t-w", type=_millis, default=d.t_w, help="sleep per weight-backward, ms")
    p.add_argument("--out", help="output folder, new or empty (default: a new out/run-<schedule>-p<P>-m<M>-<time>/, "
                   "linked from out/run-<schedule>-p<P>-m<M>)")
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    p.add_argument("--check", action="store_true", help="compare one step with a single-process run")
    p.add_argument("--seed", type=_seed, default=d.seed, help="seed for model weights and data (default %(default)s)")
    p.add_argument("--threads", type=_threads, help="torch threads per rank (default: cores // ranks on the node)")
    p.add_argument("--lr", type=_rate, default=d.lr, help="SGD learning rate (finite, >= 0)")
    p.add_argument("--no-predict", dest="predict", action="store_false", help="skip the simulator comparison")
    p.add_argument("--fail-rank", type=int, help="testing aid: raise on this world rank mid-step (failure handling)")
    p.add_argument("--progress", choices=("idle", "hooks", "boundary", "thread", "mpich"), default=d.progress,
                   help="how transfers progress during compute (default %(default)s; see docs/executor.md)")
    p.add_argument("--recv-window", type=_positive, help="async: receives pre-posted ahead (default 2 x ranks)")
    p.add_argument("--timeout", type=_seconds, help="watchdog per step, seconds (default: 300 s during "
                   "warm-up, then 10 x the predicted step time)")
    p.add_argument("--stall-rank", type=int, help="testing aid: this world rank hangs at the first op of step 2")
    p.add_argument("--costs", help="costs.json from 'executor profile': also predict the step from it "
                   "(and build zb-1p, zb-2p and zb-auto for its costs)")
    p.add_argument("--cpu-times", action="store_true",
                   help="also record each compute op's thread CPU time (summary.json: op_cpu_time)")
    p.add_argument("--canary", action="store_true",
                   help="with --costs: scale the profile's compute costs by the machine's drift since the profile "
                        "(a fixed op timed in the profile and again just before the timed steps)")
    p.add_argument("--t-comm", type=_millis, help="zb-1p, zb-2p, zb-auto: communication per hop they plan with, ms")
    p.add_argument("--memory-limit", type=_rate, help="zb-auto: activations a stage may hold, in microbatches "
                   "(default 2 x ranks: ZB-2p; ranks gives ZB-1p)")
    p.add_argument("--inflation", action="store_true",
                   help="also time each op alone first and report in-run / alone medians")
    return p


@dataclass(frozen=True)
class ProfileOptions:
    """What ``python -m executor profile`` measures, beside the run's model flags."""

    out: str = "out/profile"
    """Folder for costs.json."""
    chunks: tuple[int, ...] = (1, 2)
    """Model stages per rank of the layouts profiled."""
    microbatches: tuple[int, ...] | None = None
    """Microbatch counts profiled; None: every one of 1, 2, 4, 8, 16, 32 that divides the batch."""
    repeats: int = 5
    """Rounds per op timed alone and per probe; medians are kept."""
    force: bool = False
    """Replace an existing DIR/costs.json."""


def parse_profile_args(argv: list[str]) -> tuple[RunConfig, ProfileOptions]:
    """``profile [model flags] [--out DIR] [--chunks 1,2] [--microbatches 1,2,...] [--repeats N]``."""
    p = build_parser(conflict_handler="resolve")  # --chunks and --microbatches name the layouts here: lists
    p.prog = "python -m executor profile"
    p.description = "Measure a model once (every layout, links, node sharing) and write DIR/costs.json."
    d = ProfileOptions()
    p.add_argument("--chunks", type=_counts, default=d.chunks, help="chunks of the layouts (default 1,2)")
    p.add_argument("--microbatches", type=_counts,
                   help="microbatch counts (default: each of 1,2,4,8,16,32 dividing the batch)")
    p.add_argument("--repeats", type=_positive, default=d.repeats, help="rounds per op (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing DIR/costs.json")
    ns = vars(p.parse_args(argv))
    options = ProfileOptions(out=ns.pop("out") or d.out, chunks=ns.pop("chunks"),
                             microbatches=ns.pop("microbatches"), repeats=ns.pop("repeats"), force=ns.pop("force"))
    if ns["warmup"] < 0:
        raise UsageError(f"--warmup must be >= 0, got {ns['warmup']}")
    return RunConfig(**ns), options


def parse_args(argv: list[str] | None = None) -> RunConfig:
    """Parse the command line into a RunConfig; raise UsageError on bad arguments."""
    ns = build_parser().parse_args(argv)
    if ns.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {ns.warmup}")
    cfg = RunConfig(**{k: v for k, v in vars(ns).items()})
    if cfg.check and cfg.compute == "sleep":
        raise UsageError("--check needs --compute real: sleeping stages compute no gradients")
    if cfg.schedule_file and cfg.chunks is not None:
        raise UsageError("--chunks does not apply to --schedule-file: the file fixes the stages of each rank")
    if cfg.canary and cfg.costs is None:
        raise UsageError("--canary scales the prediction of --costs: give --costs costs.json")
    if cfg.check:
        cfg = replace(cfg, steps=1, warmup=0)  # the gradients of exactly one step are compared
    return cfg
