"""The notebooks run top to bottom, and are committed without outputs.

Execution uses nbclient with a kernel started from this interpreter (``sys.executable``):
a throw-away kernelspec is written under ``tmp_path``, so a user-level ``python3``
kernelspec pointing at some other Python can never be picked up. That needs only
``ipykernel`` in the venv, which ``pip install -e .[test]`` provides.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = {"schedules_gallery.ipynb": 13, "bubble_overhead.ipynb": 7, "planning.ipynb": 5}  # charts each one draws
NAMES = list(FIGURES)
# The slowest cell runs up to three executor jobs (about 15 s each here) when out/ lacks them.
CELL_TIMEOUT_S = 400


def _committed() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_both_notebooks_are_committed():
    assert sorted(p.name for p in _committed()) == sorted(NAMES)


def _dirty_cells(nb) -> list[int]:
    """Indices of code cells that hold outputs or an execution count."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and (cell.get("outputs") or cell.get("execution_count") is not None)]


@pytest.mark.parametrize("path", _committed(), ids=lambda p: p.name)
def test_committed_without_outputs(path: Path):
    dirty = _dirty_cells(nbformat.read(path, as_version=4))
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs or execution counts; strip them"


def test_output_check_catches_outputs():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    clean = new_code_cell("1 + 1")
    counted = new_code_cell("1 + 1", execution_count=3)
    printed = new_code_cell("print(2)", outputs=[new_output("stream", name="stdout", text="2\n")])
    assert _dirty_cells(new_notebook(cells=[clean, counted, printed])) == [1, 2]


def _kernel_manager(tmp_path: Path):
    """A KernelManager whose only kernelspec runs ipykernel under this very interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "pipebubble"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "pipebubble venv", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="pipebubble", kernel_spec_manager=specs)


@pytest.mark.notebook
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name: str, tmp_path: Path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    began = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"{name}: executed in {time.perf_counter() - began:.1f} s")
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells
                 if cell.cell_type == "code" for out in cell.outputs)
    assert images == FIGURES[name], f"{name} drew {images} figures, expected {FIGURES[name]}"
