"""The commands the README and docs/ show work as written.

Every fenced block whose info string says ``quick`` (```` ```sh quick ````) is run, line
by line, in a fresh folder that sees the repository's ``.venv``, ``tests`` and
``notebooks`` (so relative paths such as ``tests/data/…`` and ``out/…`` resolve as they
do in a checkout), each line with the shell, in order, and each must exit 0. Comments
after ``#`` are the shell's. Blocks without ``quick`` (longer runs: profiles, the
matrix, benches) are checked only for naming a file or module that exists.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(info string, command lines) of every shell block of a markdown file; a line ending
    in a backslash continues on the next."""
    found = []
    for info, body in FENCE.findall(path.read_text()):
        if info.split()[:1] not in (["sh"], ["bash"], []):
            continue
        lines, current = [], ""
        for line in body.splitlines():
            current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                if current.strip() and not current.lstrip().startswith("#"):
                    lines.append(current.strip())
                current = ""
        found.append((info, lines))
    return found


QUICK = [(path, i, lines) for path in DOCS for i, (info, lines) in enumerate(blocks(path)) if "quick" in info.split()]


def test_the_docs_mark_some_commands_quick():
    assert len(QUICK) >= 5, "README.md and docs/ should mark their fast commands ```sh quick"


def _param(path: Path, index: int, lines: list[str]):
    """A block that launches MPI is an MPI test (``make test-fast`` skips it)."""
    marks = [pytest.mark.mpi] if any("mpiexec" in line for line in lines) else []
    return pytest.param(path, index, lines, marks=marks, id=f"{path.name}-{index}")


@pytest.mark.parametrize("path,index,lines", [_param(*q) for q in QUICK])
def test_quick_commands_run_as_written(path: Path, index: int, lines: list[str], tmp_path: Path):
    for name in (".venv", "tests", "notebooks", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{path.name}: {line}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"


def _named(line: str) -> list[str]:
    """Files and modules a command names: `-m module`, and arguments that look like repo paths."""
    words = shlex.split(line, comments=True)
    names = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]
    names += [w for w in words if re.match(r"^(bench|tests|notebooks|docs)/[\w./-]+$", w)]
    return names


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_command_names_what_exists(path: Path):
    for _, lines in blocks(path):
        for line in lines:
            for name in _named(line):
                if "/" in name:
                    assert (ROOT / name).exists(), f"{path.name}: {line} names {name}, which does not exist"
                else:
                    top = name.split(".")[0]
                    assert (ROOT / top).is_dir() or (ROOT / f"{top}.py").exists() or top in ("pytest", "mpi4py",
                                                                                          "pip", "venv"), \
                        f"{path.name}: {line} runs module {name}, which is not ours"
