"""GPUs and links: what turns FLOPs into seconds and bytes into transfer time.

Peak FLOP/s are dense bf16 tensor-core figures from NVIDIA's datasheets (no sparsity).
Link bandwidth is per direction, per GPU. Latencies are per-message software + wire
estimates of the order NCCL point-to-point reaches (a few microseconds in a node, about
ten across InfiniBand); they matter little next to megabyte-sized activations.

The achieved-efficiency factor (``DEFAULT_EFFICIENCY`` = 0.6) is the share of peak a
compute op reaches. Megatron-LM (Narayanan et al. SC'21, table 1) measures 138-163
TFLOP/s per A100 end to end, 44-52 % of the 312 TFLOP/s peak, *including* pipeline
bubbles, communication and the optimizer; the simulator adds those itself, so the factor
for compute alone must be higher. Large bf16 GEMMs reach about 70-80 % of peak on A100
and layer norms, softmax and element-wise ops much less; 0.6 for a whole layer sits
between, and reproduces Megatron's end-to-end share once a ~10-20 % bubble is added.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Gpu", "Link", "GPUS", "LINKS", "DEFAULT_EFFICIENCY", "GIB"]

GIB = 1024 ** 3
DEFAULT_EFFICIENCY = 0.6


@dataclass(frozen=True)
class Gpu:
    """One accelerator."""

    name: str
    """Preset name or a label of your own."""
    peak_flops: float
    """Dense bf16 peak (FLOP/s)."""
    memory_bytes: float
    """Device memory (bytes): the default memory cap."""
    hbm_bandwidth: float
    """Device memory bandwidth (bytes/s): prices the optimizer step, which streams the state."""
    intra_link: str = "nvlink"
    """Default link between GPUs of one node (a key of LINKS)."""
    source: str = ""
    """Where the figures come from."""

    def __post_init__(self) -> None:
        for field in ("peak_flops", "memory_bytes", "hbm_bandwidth"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"gpu {field} must be a number > 0, got {value!r}")


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
        if isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, (int, float)) or not self.bandwidth > 0:
            raise ValueError(f"link bandwidth must be a number > 0, got {self.bandwidth!r}")
        if isinstance(self.latency, bool) or not isinstance(self.latency, (int, float)) or not self.latency >= 0:
            raise ValueError(f"link latency must be a number >= 0, got {self.latency!r}")


GPUS: dict[str, Gpu] = {
    "a100-80gb": Gpu("a100-80gb", 312e12, 80 * GIB, 2.039e12, "nvlink",
                     "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 312 TFLOP/s bf16 dense, 2,039 GB/s HBM2e"),
    "h100-80gb": Gpu("h100-80gb", 989e12, 80 * GIB, 3.35e12, "nvlink4",
                     "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3"),
    "h200-141gb": Gpu("h200-141gb", 989e12, 141e9, 4.8e12, "nvlink4",
                      "NVIDIA H200 Tensor Core GPU datasheet (SXM): 989 TFLOP/s bf16 dense, 141 GB HBM3e, 4.8 TB/s"),
}

LINKS: dict[str, Link] = {
    "nvlink": Link("nvlink", 300e9, 5e-6,
                   "NVLink 3 (A100): 12 links x 25 GB/s = 300 GB/s per direction (600 GB/s total)"),
    "nvlink4": Link("nvlink4", 450e9, 5e-6,
                    "NVLink 4 (H100/H200): 18 links x 25 GB/s = 450 GB/s per direction (900 GB/s total)"),
    "infiniband": Link("infiniband", 25e9, 10e-6,
                       "HDR InfiniBand, one 200 Gb/s NIC per GPU (DGX A100): 25 GB/s per direction"),
    "shared-memory": Link("shared-memory", 8.5e9, 3.1e-6,
                          "MPICH wheel between two processes of one machine, measured here (REFERENCE.md): "
                          "3.1 us one-way latency, about 8.5 GB/s at 16 MiB"),
    "infiniband-ndr": Link("infiniband-ndr", 50e9, 10e-6,
                           "NDR InfiniBand, one 400 Gb/s NIC per GPU (DGX H100): 50 GB/s per direction"),
}
