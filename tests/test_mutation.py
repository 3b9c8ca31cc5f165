"""Test strength of the numeric core: mutmut's score, measured, not asserted from memory.

mutmut (its settings in ``[tool.mutmut]`` of pyproject.toml) changes the core's code
one small edit at a time and runs the core's quick tests against each change; a
change that no test notices is a place where the tests look away. The run happens
in a copy of the project under ``tmp_path``, so the checkout is left as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.95  # killed / total, every mutant counted (the README states the measured score)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_core_tests_kill_at_least_95_percent_of_mutants(tmp_path):
    pytest.importorskip("mutmut", reason="mutmut is in the test extras")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", project / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run([*mutmut, "run", "--max-children", "2"], cwd=project,
                         capture_output=True, text=True, timeout=1400)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=project, check=True, capture_output=True)
    stats = json.loads((project / "mutants" / "mutmut-cicd-stats.json").read_text())
    assert stats["total"] > 1000  # the whole core was mutated, not a file of it
    assert stats["suspicious"] == stats["timeout"] == stats["segfault"] == 0
    score = stats["killed"] / stats["total"]
    survivors = subprocess.run([*mutmut, "results"], cwd=project, capture_output=True, text=True)
    assert score >= TARGET, f"{score:.1%} killed; survivors:\n{survivors.stdout}"
