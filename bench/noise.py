"""The floor under every real-compute figure: how still this machine holds one fixed op.

    .venv/bin/python bench/noise.py [--windows 30] [--threads 1]

Times the canary (:mod:`executor.record.canary`: one fixed float32 matmul, the op the
profile records and a run with ``--costs`` re-times) back to back in one-second windows,
first alone, then beside a second process computing the same op without pause (as a
second rank would). Per phase it prints the median of each window, their spread (max -
min over the median), how many windows lie within 2 % of the median, and, between the
phases, the second process's effect (median beside over median alone). Then the same
alone again, so that the machine's drift over the bench itself shows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from executor.record.canary import CANARY, canary_op  # noqa: E402

BUSY = ("import torch, sys; sys.path.insert(0, {root!r}); torch.set_num_threads({threads});"
        "from executor.record.canary import canary_op; op = canary_op()\nwhile True: op()")


def windows(count: int, seconds: float = 1.0) -> list[float]:
    """Median seconds of the canary in each of ``count`` windows of ``seconds``."""
    op = canary_op()
    for _ in range(3):
        op()
    out = []
    for _ in range(count):
        times, end = [], time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            op()
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out


def describe(label: str, medians: list[float]) -> float:
    mid = statistics.median(medians)
    within = sum(abs(m / mid - 1) <= 0.02 for m in medians)
    print(f"{label:<28} median {mid * 1e3:7.3f} ms  windows {min(medians) * 1e3:.3f}-{max(medians) * 1e3:.3f} ms  "
          f"spread {100 * (max(medians) - min(medians)) / mid:5.1f} %  within 2 %: {within}/{len(medians)}")
    return mid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=30, help="one-second windows per phase (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s, as a rank)")
    args = parser.parse_args(argv)
    if args.windows < 2 or args.threads < 1:
        parser.error("--windows >= 2 and --threads >= 1")
    torch.set_num_threads(args.threads)
    print(f"canary: {CANARY}, {args.threads} thread(s); {args.windows} windows of 1 s per phase")
    alone = describe("alone", windows(args.windows))
    busy = subprocess.Popen([sys.executable, "-c", BUSY.format(root=str(ROOT), threads=args.threads)])
    try:
        time.sleep(1.0)  # let it start computing
        beside = describe("beside a second process", windows(args.windows))
    finally:
        busy.kill()
        busy.wait()
    again = describe("alone again", windows(args.windows))
    print(f"beside / alone {beside / alone:.3f}; alone again / alone {again / alone:.3f} (the drift over "
          f"{3 * args.windows} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
