"""GPUs and links: what turns FLOPs into seconds and bytes into transfer time.

Peak FLOP/s are dense bf16 tensor-core figures from NVIDIA's datasheets (no sparsity),
HBM bandwidth the datasheets' too. Link bandwidth is per direction, per GPU, as NCCL
reaches it where a measurement was found (the ``bus bandwidth`` of ``all_reduce_perf``,
the figure the ring model 2 (t - 1)/t x bytes / bandwidth reproduces), else the datasheet's.
Latencies are per-message software + wire estimates of the order NCCL reaches (a few
microseconds in a node, about ten across InfiniBand).

Each op is priced on its own (:mod:`planner.ops`), with three numbers per GPU type that
no datasheet gives, each taken from a measurement published for that GPU (the ``source``
of each preset says which); none is fitted to the planner's validation rows:

``gemm_efficiency``
    the share of peak a large, well-shaped bf16 GEMM sustains: Stas Bekman's
    "maximum achievable matmul FLOPS" (MAMF) table in *ml-engineering* (best over a scan
    of large shapes: A100 SXM 267.9 of 312 TFLOP/s, H100 SXM 792.1 of 989).
``hbm_efficiency``
    the share of HBM bandwidth a large memory-bound kernel sustains (an A100 80GB SXM read
    kernel reached 1.80 of 2.04 TB/s, 88 %, with Nsight Compute agreeing: NVIDIA
    developer forum, "Trouble to reach peak bandwidth of A100", 2025).
``kernel_overhead``
    seconds every kernel adds to its FLOPs or bytes (launch and ramp-up). From the matrix
    efficiency table of Calculon's A100 description (Isaev et al., SC'23: 60 % of peak for
    a 1-GFLOP GEMM, 95 % from 128 GFLOP), a 1-GFLOP GEMM takes 2.0 us longer than at the
    large-GEMM rate.

Beside them, each GPU's SM count (datasheet): a GEMM runs in waves of one output tile per
SM (:func:`planner.ops.gemm_time`), so the tile and wave quantization of NVIDIA's "Matrix
Multiplication Background User's Guide" and the tile's output writes, which follow its
FLOPs, make small, thin or awkwardly shaped GEMMs run further from peak.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Gpu", "Link", "GPUS", "LINKS", "GIB"]

GIB = 1024 ** 3


def _positive(owner: str, name: str, value, upper: float | None = None, zero: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (value >= 0 if zero else value > 0)
    if not ok or (upper is not None and value > upper):
        bound = f"within {'[0' if zero else '(0'}, {upper:g}]" if upper is not None else ">= 0" if zero else "> 0"
        raise ValueError(f"{owner} {name} must be a number {bound}, got {value!r}")


@dataclass(frozen=True)
class Gpu:
    """One accelerator: datasheet figures and the three measured efficiencies."""

    name: str
    """Preset name or a label of your own."""
    peak_flops: float
    """Dense bf16 peak (FLOP/s)."""
    memory_bytes: float
    """Device memory (bytes): the default memory cap."""
    hbm_bandwidth: float
    """Device memory bandwidth (bytes/s)."""
    gemm_efficiency: float
    """Share of ``peak_flops`` a large bf16 GEMM sustains (measured; see the module docstring):
    the rate of a tile's multiply-accumulates in :func:`planner.ops.gemm_time`."""
    hbm_efficiency: float
    """Share of ``hbm_bandwidth`` a large memory-bound kernel sustains (measured)."""
    kernel_overhead: float
    """Seconds each kernel adds besides its FLOPs or bytes (launch, ramp-up, tail)."""
    intra_link: str = "nvlink"
    """Default link between GPUs of one node (a key of LINKS)."""
    source: str = ""
    """Where the figures come from."""
    sms: int = 0
    """Streaming multiprocessors (datasheet): a GEMM runs in waves of one tile per SM
    (:func:`planner.ops.gemm_time`); 0 prices GEMMs as a plain roofline (a CPU, say)."""

    def __post_init__(self) -> None:
        for field in ("peak_flops", "memory_bytes", "hbm_bandwidth"):
            _positive("gpu", field, getattr(self, field))
        for field in ("gemm_efficiency", "hbm_efficiency"):
            _positive("gpu", field, getattr(self, field), upper=1.0)
        _positive("gpu", "kernel_overhead", self.kernel_overhead, zero=True)
        if isinstance(self.sms, bool) or not isinstance(self.sms, int) or self.sms < 0:
            raise ValueError(f"gpu sms must be a whole number >= 0, got {self.sms!r}")

    @property
    def gemm_flops(self) -> float:
        """FLOP/s a large GEMM sustains."""
        return self.peak_flops * self.gemm_efficiency

    @property
    def hbm_bytes(self) -> float:
        """Bytes/s a large memory-bound kernel sustains."""
        return self.hbm_bandwidth * self.hbm_efficiency


@dataclass(frozen=True)
class Link:
    """A point-to-point link as one GPU sees it."""

    name: str
    """Preset name or a label of your own."""
    bandwidth: float
    """Bytes per second, one direction."""
    latency: float
    """Seconds per message."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        _positive("link", "bandwidth", self.bandwidth)
        _positive("link", "latency", self.latency, zero=True)


_MAMF = "Bekman, ml-engineering, 'Maximum Achievable Matmul FLOPS comparison table'"
_HBM = "NVIDIA developer forum 'Trouble to reach peak bandwidth of A100': 1.80 of 2.04 TB/s (88 %)"
_OVERHEAD = "Calculon (Isaev et al. SC'23) A100 matrix efficiency: 0.6 at 1 GFLOP, 0.95 from 128 GFLOP: ~2 us a GEMM"

GPUS: dict[str, Gpu] = {
    "a100-80gb": Gpu("a100-80gb", 312e12, 80 * GIB, 2.039e12, 267.9 / 312, 0.88, 2e-6, "nvlink",
                     "NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOP/s bf16 dense, 2,039 GB/s HBM2e; "
                     f"gemm_efficiency {_MAMF} (A100 SXM 267.9 TFLOP/s, CUDA 12.1); hbm_efficiency {_HBM}; "
                     f"kernel_overhead {_OVERHEAD}; 108 SMs (NVIDIA A100 whitepaper)", sms=108),
    "h100-80gb": Gpu("h100-80gb", 989e12, 80 * GIB, 3.35e12, 792.1 / 989, 0.88, 2e-6, "nvlink4",
                     "NVIDIA H100 datasheet (SXM5): 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3; "
                     f"gemm_efficiency {_MAMF} (H100 SXM 792.1 TFLOP/s); hbm_efficiency and kernel_overhead "
                     "assumed as the A100's (no H100 measurement found); 132 SMs (NVIDIA H100 whitepaper, SXM5)",
                     sms=132),
    "h200-141gb": Gpu("h200-141gb", 989e12, 141e9, 4.8e12, 790 / 989, 0.88, 2e-6, "nvlink4",
                      "NVIDIA H200 datasheet (SXM): 989 TFLOP/s bf16 dense, 141 GB HBM3e, 4.8 TB/s; "
                      "gemm_efficiency: a bf16 8192^3 matmul ran at about 790 TFLOP/s on this project's H200 "
                      "(REFERENCE.md; Bekman's MAMF table gives 794.5 for H100/H200); hbm_efficiency and "
                      "kernel_overhead assumed as the A100's (no H200 measurement found); 132 SMs (H100's die)",
                      sms=132),
}

LINKS: dict[str, Link] = {
    "nvlink": Link("nvlink", 200e9, 5e-6,
                   "NVLink 3 (A100, 12 links x 25 GB/s = 300 GB/s per direction on the datasheet); NCCL "
                   "all_reduce_perf on 8 A100-SXM4-80GB measures about 200 GB/s bus bandwidth (NVIDIA/nccl-tests "
                   "issues #149, NCCL 2.18, and #178, 208 GB/s)"),
    "nvlink4": Link("nvlink4", 475e9, 5e-6,
                    "NVLink 4 (H100/H200, 18 links x 25 GB/s = 450 GB/s per direction on the datasheet); NCCL "
                    "all_reduce_perf on 8 H200 peaks at 475 GB/s bus bandwidth with NVLink SHARP (NVIDIA/nccl-tests "
                    "issue #272, NCCL 2.20.3)"),
    "infiniband": Link("infiniband", 24e9, 10e-6,
                       "HDR InfiniBand, one 200 Gb/s NIC per GPU (DGX A100; 25 GB/s per direction on the datasheet); "
                       "NCCL all_reduce_perf across A100 nodes with 4 HDR NICs per 8 GPUs peaks at 96 GB/s bus "
                       "bandwidth against 100 (NVIDIA/nccl-tests issue #119): 24 GB/s a NIC"),
    "shared-memory": Link("shared-memory", 8.5e9, 3.1e-6,
                          "MPICH wheel between two processes of one machine, measured here (REFERENCE.md): "
                          "3.1 us one-way latency, about 8.5 GB/s at 16 MiB"),
    "infiniband-ndr": Link("infiniband-ndr", 50e9, 10e-6,
                           "NDR InfiniBand, one 400 Gb/s NIC per GPU (DGX H100): 50 GB/s per direction"),
}
