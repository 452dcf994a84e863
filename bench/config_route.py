"""The route a run's configuration takes through the executor's files.

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/config_route.py [executor arguments]

Runs the executor (default: 1F1B, m = 4, a small MLP, 2 steps, with a profile's
prediction) under a profiler hook on world rank 0 that notes every call of a function
of ours that is handed the run's configuration: a local holding the
:class:`executor.config.RunConfig` or the :class:`executor.engine.plan.RunPlan` made from
it. Consecutive calls in one file are one visit. It prints the route (file by file, in
order), the files visited, how many times the route came back to each, and every step
from a file of a higher layer back down and up again ("back up a layer": a file of a
lower layer calling into a higher one). Layers, bottom to top: the options
(``executor/config.py``), compute, record, transport, engine, results, and the command
line (``executor/__main__.py``, ``executor/demo.py``, ``executor/launch.py``).
"""

from __future__ import annotations

import runpy
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYERS = ("compute", "record", "transport", "engine", "results")
DEFAULT = ["--schedule", "1f1b", "--microbatches", "4", "--width", "64", "--batch", "64", "--layers", "4",
           "--steps", "2", "--warmup", "1"]


def layer(path: str) -> int:
    """1 .. 5 for the executor's folders, 0 for ``executor/config.py`` (the options every
    layer reads), 6 for the command line (the package's other own files)."""
    parts = Path(path).parts
    if parts[-1] == "config.py":
        return 0
    for i, name in enumerate(LAYERS):
        if name in parts:
            return i + 1
    return len(LAYERS) + 1


def main() -> int:
    from mpi4py import MPI

    from executor.config import RunConfig
    from executor.engine.plan import RunPlan

    package = str(ROOT / "executor")
    route: list[str] = []
    calls: set[tuple[str, str]] = set()  # (caller's file, callee's file) of every such call

    def ours(path: str) -> str | None:
        return str(Path(path).relative_to(ROOT)) if path.startswith(package) else None

    def hook(frame, event, arg):
        if event != "call":
            return
        name = ours(frame.f_code.co_filename)
        if name is None or not any(isinstance(v, (RunConfig, RunPlan)) for v in frame.f_locals.values()):
            return
        if not route or route[-1] != name:
            route.append(name)
        caller = ours(frame.f_back.f_code.co_filename) if frame.f_back is not None else None
        if caller is not None and caller != name:
            calls.add((caller, name))

    args = sys.argv[1:] or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        out = ["--out", str(Path(tmp) / "run")] if "--out" not in args else []
        sys.argv = ["executor", *args, *out]
        rank0 = MPI.COMM_WORLD.Get_rank() == 0
        if rank0:
            sys.setprofile(hook)
        try:
            runpy.run_module("executor", run_name="__main__")
        except SystemExit:
            pass
        finally:
            sys.setprofile(None)
    if not rank0:
        return 0
    visits = Counter(route)
    print("route of the run's configuration (world rank 0):")
    print("  " + " -> ".join(route))
    back = sorted((a, b) for a, b in calls if layer(b) > layer(a))
    print(f"files visited: {len(visits)}; visits: {len(route)}; most returns to one file: "
          f"{max(visits.values()) - 1} ({visits.most_common(1)[0][0]})")
    print("returns per file: " + ", ".join(f"{f} {n - 1}" for f, n in visits.most_common() if n > 1))
    print(f"steps back up a layer (a lower layer's file calling a higher one's): {len(back)}"
          + "".join(f"\n  {a} -> {b}" for a, b in back))
    return 0


if __name__ == "__main__":
    sys.exit(main())
