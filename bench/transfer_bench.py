"""What the executor's transport costs on this machine, piece by piece, and how two ranks
share one device; plus each rank's preflight facts. Two ranks, one JSON file.

    mpiexec -n 2 python bench/transfer_bench.py --out transfer.json [--device auto] [--sizes 64K,1M,16M,64M]

Every piece goes through the run's own :class:`executor.transport.wire.Wire` (the same
staging, buffers and waits as a run), per message size, median of ``--repeats`` after 3
untimed rounds, as GB/s of that size:

* ``d2h``: device to pinned host (:meth:`Wire.stage_out`; its span, on the device clock);
* ``mpi``: host to host through MPI between the two ranks (ping-pong of the buffers the
  wire makes, half the round trip): what the simulator calls the link;
* ``h2d``: pinned host to device (:meth:`Wire.stage_in`, span on the device clock);
* ``staged``: the whole path, device on one rank to device on the other (staging out,
  MPI, staging in, and the wait for the last copy), half a round trip on the host clock.

``share``: each rank runs a matrix-product loop alone (the other asleep in a barrier),
then both at once; per rank, its rate together over its rate alone. Two processes on one
GPU get a context each, and the device time-slices between them: each one's CUDA events
then include the other's slices. The profile measures the same thing on the model's own
ops (``share`` in costs.json, :func:`executor.engine.probes.share`), which is what the
simulator uses; this loop is the yardstick beside it.

The preflight (per rank): host, local rank, device and its name, torch and CUDA versions,
mpi4py and the MPI library it loaded, MPI's thread level, whether transfers are staged
or direct. On a CPU (``--device cpu``) ``--staged`` stages through host copies, to
rehearse the same path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mpi4py  # noqa: E402
import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402

from executor.engine.runtime import node_layout  # noqa: E402
from executor.results.device import thread_level  # noqa: E402
from executor.transport.wire import Wire, cuda_aware  # noqa: E402

WARMUP = 3
TAG = 77
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def sizes_of(text: str) -> list[int]:
    """'64K,1M' -> [65536, 1048576]."""
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        out.append(int(part[:-1]) * UNITS[part[-1]] if part[-1] in UNITS else int(part))
    return out


def seconds(span) -> float:
    """A copy's span: host floats, or two CUDA events."""
    start, end = span
    if isinstance(start, float):
        return end - start
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def median_of(fn, repeats: int) -> float:
    for _ in range(WARMUP):
        fn()
    return statistics.median(fn() for _ in range(repeats))


def preflight(device: torch.device, wire: Wire, local: tuple[int, int]) -> dict:
    facts = {"rank": MPI.COMM_WORLD.Get_rank(), "host": platform.node(), "local_rank": local[0],
             "ranks_on_node": local[1], "device": str(device), "python": sys.version.split()[0],
             "executable": sys.executable, "torch": torch.__version__, "cuda": torch.version.cuda,
             "mpi4py": mpi4py.__version__, "mpi4py_file": mpi4py.__file__,
             "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
             "mpi_version": "%d.%d" % MPI.Get_version(), "mpi_thread_level": thread_level(),
             "transfers": "staged" if wire.staged else "direct", "cuda_aware_mpi": cuda_aware(),
             "torch_threads": torch.get_num_threads(),
             "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PIPEBUBBLE_CUDA_AWARE", "MPI4PY_LIBMPI")}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(gpu=props.name, gpu_memory_bytes=props.total_memory, gpu_count=torch.cuda.device_count(),
                     capability="%d.%d" % (props.major, props.minor))
    return facts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def transfers(comm: MPI.Comm, wire: Wire, device: torch.device, n: int, repeats: int) -> dict | None:
    """One size's four measurements (on rank 0; None elsewhere)."""
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    x = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    host, spec = wire.buffer((n,), torch.uint8)
    out = {"bytes": n}
    if rank == 0:  # the copies alone, the other rank waiting
        out["d2h_s"] = median_of(lambda: seconds(wire.stage_out(x)[1] or (0.0, 0.0)), repeats)
        out["h2d_s"] = median_of(lambda: seconds(wire.stage_in(host)[1] or (0.0, 0.0)), repeats)
    comm.Barrier()

    def pingpong() -> float:
        start = time.perf_counter()
        if rank == 0:
            comm.Send(spec, dest=peer, tag=TAG)
            comm.Recv(spec, source=peer, tag=TAG)
        else:
            comm.Recv(spec, source=peer, tag=TAG)
            comm.Send(spec, dest=peer, tag=TAG)
        return (time.perf_counter() - start) / 2

    out["mpi_s"] = median_of(pingpong, repeats)
    comm.Barrier()

    def through() -> float:  # device -> device and back, everything a run does on the way
        start = time.perf_counter()
        for sender in (0, 1):
            if rank == sender:
                data, _ = wire.stage_out(x)
                comm.Send(wire.spec(data), dest=peer, tag=TAG)
            else:
                buffer, into = wire.buffer((n,), torch.uint8)
                comm.Recv(into, source=peer, tag=TAG)
                wire.stage_in(buffer)
                _sync(device)
        return (time.perf_counter() - start) / 2

    out["staged_s"] = median_of(through, repeats)
    comm.Barrier()
    if rank != 0:
        return None
    for key in ("d2h", "mpi", "h2d", "staged"):
        t = out[f"{key}_s"]
        out[f"{key}_gb_per_s"] = n / t / 1e9 if t > 0 else None
    return out


def share(comm: MPI.Comm, device: torch.device, span_s: float) -> dict:
    """Per rank: matrix products per second alone and with both ranks at once."""
    side = 4096 if device.type == "cuda" else 256
    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    c = torch.empty(side, side, device=device)

    def loop(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=c)
        _sync(device)
        return time.perf_counter() - start

    loop(3)
    n = max(3, int(span_s / max(loop(5) / 5, 1e-9)))
    n = comm.allreduce(n, op=MPI.MIN)  # the same loop on both ranks
    alone = None
    for turn in range(comm.Get_size()):
        if turn == comm.Get_rank():
            alone = n / loop(n)
        comm.Barrier()
    together = n / loop(n)
    comm.Barrier()
    rates = comm.gather((alone, together), root=0)
    if comm.Get_rank() != 0:
        return {}
    flop = 2 * side ** 3
    return {"matmul": f"float32 {side}x{side} @ {side}x{side}", "products_per_rank": n,
            "alone_per_s": [r[0] for r in rates], "together_per_s": [r[1] for r in rates],
            "rate_together_over_alone": [r[1] / r[0] for r in rates],
            "alone_tflop_per_s": [r[0] * flop / 1e12 for r in rates]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (rank 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--staged", action="store_true", help="on a CPU: stage through host copies anyway")
    parser.add_argument("--sizes", default="64K,1M,16M,64M", help="message sizes (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per measurement (default %(default)s)")
    parser.add_argument("--share-seconds", type=float, default=0.3, help="each matmul loop's length (default 0.3)")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        parser.error("run it on exactly 2 ranks")
    local = node_layout(comm)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        device = torch.device("cuda", local[0] % torch.cuda.device_count())  # the executor's rule
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local[1]))
    wire = Wire(device, staged=True if args.staged and not cuda else None)
    began = time.perf_counter()
    facts = comm.gather(preflight(device, wire, local), root=0)
    table = [transfers(comm, wire, device, n, args.repeats) for n in sizes_of(args.sizes)]
    shared = share(comm, device, args.share_seconds)
    if comm.Get_rank() == 0:
        doc = {"preflight": facts, "device": device.type, "transfers": table, "share": shared,
               "repeats": args.repeats, "wall_s": time.perf_counter() - began}
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        for row in table:
            print(f"{row['bytes']:>10} B  " + "  ".join(
                f"{key} {row[f'{key}_gb_per_s'] or 0:7.2f} GB/s" for key in ("d2h", "mpi", "h2d", "staged")))
        print("share: rate together over alone per rank "
              + ", ".join(f"{r:.3f}" for r in shared["rate_together_over_alone"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
