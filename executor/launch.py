"""Starting the executor under mpiexec from Python: the one launcher shared by the demo,
the notebooks, the benches and the MPI tests.

    launch(2, ["--schedule", "1f1b", "--microbatches", "8"])   # mpiexec -n 2 python -m executor ...

On timeout mpiexec gets SIGTERM, which hydra passes on to every rank before it exits; the
SIGKILL that ``subprocess.run`` sends on timeout would leave the ranks running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["launch", "MPIEXEC", "TIMEOUT_S"]

def _mpiexec() -> Path:
    """``PIPEBUBBLE_MPIEXEC`` if set; else the MPICH wheel's, installed beside this Python;
    else the first ``mpiexec`` on PATH (a machine whose Python is not ours: the GPU check)."""
    named = os.environ.get("PIPEBUBBLE_MPIEXEC")
    if named:
        return Path(named)
    beside = Path(sys.executable).parent / "mpiexec"
    found = shutil.which("mpiexec")
    return beside if beside.exists() or not found else Path(found)


MPIEXEC = _mpiexec()
TIMEOUT_S = 150


def launch(ranks: int, args: Sequence[str], mpiexec: Path = MPIEXEC, timeout: float = TIMEOUT_S,
           capture: bool = False, *, module: str = "executor", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n ranks python -m module *args`` in ``cwd`` and wait for it; raise
    ``subprocess.TimeoutExpired`` after ``timeout`` seconds, once every rank has ended.

    ``capture`` keeps stdout and stderr (text) in the result instead of passing them through.
    """
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", module, *args]
    pipe = subprocess.PIPE if capture else None
    with subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, cwd=cwd) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.communicate(timeout=30)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
