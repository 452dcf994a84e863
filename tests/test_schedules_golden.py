"""Golden grids: one small case of every schedule, compute-only and lowered, as reviewed text.

The compute-only grids were checked by hand against the papers (1F1B warm-up p - r - 1,
interleaved warm-up 2(p - r - 1) + (v - 1)p, ZB-H1 rank r lagging its W by r, ZB-V's V);
gpipe, interleaved-1f1b and zbv also equal torch's own tables (tests/test_csv_torch.py).
Regenerate after a deliberate change with PIPEBUBBLE_GOLDEN=update and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import schedules
from schedules import format_grid as grid, validate

GOLDEN = Path(__file__).parent / "data" / "golden"
CASES = {  # name -> (ranks, microbatches, chunks)
    "naive": (2, 2, None),
    "gpipe": (3, 3, None),
    "1f1b": (3, 4, None),
    "interleaved-1f1b": (2, 4, 2),
    "zb-h1": (3, 4, None),
    "zbv": (2, 4, None),
    "looped-bfs": (2, 3, 2),
    "zb-h2": (3, 5, None),
    "interleaved-zb": (2, 4, 2),
    "dualpipev": (2, 4, None),
    "v-half": (2, 4, None),
    "v-min": (3, 6, None),
    "zb-1p": (3, 4, None),  # built at unit costs (no costs given)
    "zb-2p": (3, 5, None),
    "zb-auto": (3, 5, None),
}


def render(name: str) -> str:
    ranks, microbatches, chunks = CASES[name]
    schedule = schedules.build(name, ranks=ranks, microbatches=microbatches, chunks=chunks)
    return (f"{name} ranks={ranks} microbatches={microbatches} chunks={schedule.chunks}\n\n"
            f"compute only:\n{grid(schedule)}\n\nlowered for async:\n{grid(validate(schedule, 'async'))}\n"
            f"\nlowered for blocking:\n{grid(validate(schedule, 'blocking'))}\n")


def test_every_schedule_has_a_golden_case() -> None:
    assert set(CASES) == set(schedules.names())


@pytest.mark.parametrize("name", list(CASES))
def test_golden_grid(name: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("PIPEBUBBLE_GOLDEN") == "update":
        path.write_text(render(name))
    assert render(name) == path.read_text()
