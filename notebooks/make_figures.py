"""Regenerate the committed figures in notebooks/figures/ (the README shows them).

    .venv/bin/python notebooks/make_figures.py

gantt-1f1b-p4-m8.png: the simulated 1F1B step at p = 4, m = 8 with unit costs
(t_f = t_i = t_w = 1, so a full backward takes 2) and free communication.
"""

from __future__ import annotations

from pathlib import Path

import schedules
import simulator

FIGURES = Path(__file__).resolve().parent / "figures"


def main() -> None:
    result = simulator.simulate(schedules.build("1f1b", ranks=4, microbatches=8))
    path = FIGURES / "gantt-1f1b-p4-m8.png"
    fig = simulator.plot_gantt(result.trace, width=10)
    fig.axes[0].set_xlabel("time (units of one forward)")  # unit costs, not seconds
    fig.savefig(path, dpi=150)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
