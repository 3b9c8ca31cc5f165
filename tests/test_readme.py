"""README.md stays true: CI runs its test command, its tables name tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = 'python3 -m pip install -e ".[test]" && python3 -m pytest'


def test_the_two_commands_come_first_and_ci_runs_the_test_command():
    head = README[: README.index("## Running experiments")]
    assert "python3 -m pip install -e . && numgrad" in head
    assert TEST_COMMAND in head
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_every_test_the_readme_names_exists():
    sources = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    named = set(re.findall(r"::(test_\w+)|`(test_\w+)`", README))
    names = {a or b for a, b in named}
    assert len(names) >= 20
    missing = sorted(n for n in names if f"def {n}(" not in sources)
    assert not missing, missing
