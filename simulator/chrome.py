"""The simulator's Perfetto trace: :func:`timeline.perfetto.write_perfetto` with the memory
counter of the simulator's own accounting (:mod:`simulator.memory`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from timeline.perfetto import write_perfetto

from .memory import memory_timeline

__all__ = ["to_chrome_trace"]


def to_chrome_trace(trace: pd.DataFrame, path: str | Path, act_memory: float | Sequence[float] = 1.0,
                    w_fraction: float = 0.5) -> Path:
    """Write ``trace`` as Trace Event JSON, its memory counter by :mod:`simulator.memory`
    with ``act_memory`` bytes per microbatch-stage; open it at https://ui.perfetto.dev."""
    return write_perfetto(trace, path, memory_timeline(trace, act_memory, w_fraction))
