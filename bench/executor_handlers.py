"""Where a run's host time between ops goes: the executor's handlers timed inside a real run.

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/executor_handlers.py [executor flags]

Runs ``python -m executor`` (default: zbv, m = 16, 10 timed steps, no prediction) with
each of the transport's and recorder's entry points wrapped in a timer, and prints per
rank the mean microseconds per call and the calls over the whole run (warm-up
included). Indented names run inside the one above them. The wrapper itself costs a
``perf_counter`` pair and a dict update per call (about 1 us warm, more with the caches
cold from compute), so the figures are upper bounds; compare them with each other and with
``executor profile``'s "host per op", not with MPI's own cost in a tight loop.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.__main__ import main  # noqa: E402
from executor.compute import memory  # noqa: E402
from executor.record import timing  # noqa: E402
from executor.transport import p2p, progress, wire  # noqa: E402

DEFAULT = ["--schedule", "zbv", "--microbatches", "16", "--steps", "10", "--no-predict", "--out", "out/handlers",
           "--force"]  # this bench's own scratch folder
TIMED = [  # (class, method, label): indentation shows what runs inside what
    (p2p.AsyncLinks, "send", "send"), (p2p.Links, "stage", "  stage"), (wire.Wire, "stage_out", "    stage_out"),
    (p2p.Links, "post_send", "  post_send"),
    (p2p.AsyncLinks, "recv", "recv"), (progress.Progress, "wait", "  wait"), (p2p.Links, "deliver", "  deliver"),
    (p2p.AsyncLinks, "_post_next", "  post next receive"), (p2p.Links, "post_recv", "    post_recv"),
    (wire.Wire, "spec", "buffer spec (sends and receives)"), (progress.Progress, "poke", "poke"),
    (memory.MemoryMeter, "sample", "memory sample"), (timing.Recorder, "add", "record a row"),
]


def _wrap(cls, name: str, label: str, spent: dict) -> None:
    original = getattr(cls, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            entry = spent[label]
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    setattr(cls, name, timed)


def run(argv: list[str]) -> int:
    spent: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for cls, name, label in TIMED:
        _wrap(cls, name, label, spent)
    code = main(argv or DEFAULT)
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    lines = [f"rank {rank} {label:34} {spent[label][0] / spent[label][1] * 1e6:8.1f} us x {spent[label][1]}"
             for _, _, label in TIMED if spent[label][1]]
    for turn in range(MPI.COMM_WORLD.Get_size()):  # one rank's table at a time
        if turn == rank:
            print("\n".join(lines), flush=True)
        MPI.COMM_WORLD.Barrier()
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
