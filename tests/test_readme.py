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


def test_every_test_the_readme_names_exists_in_the_file_it_names():
    # `test_x.py::test_a`, then `::test_b` for more tests of the same file.
    cited, where = [], None
    for file, name in re.findall(r"`(test_\w+\.py)?::(test_\w+)", README):
        where = file or where
        cited.append((where, name))
    assert len({name for _, name in cited}) >= 40
    missing = [f"{file}::{name}" for file, name in cited
               if f"def {name}(" not in (ROOT / "tests" / file).read_text()]  # fmt: skip
    assert not missing, missing


def test_the_layout_names_files_that_exist():
    layout = README[README.index("## Layout") :]
    block = layout[layout.index("```text") : layout.index("```", layout.index("```text") + 3)]
    folder, named = None, []
    for line in block.splitlines()[1:]:
        path = line.split()[0] if line.strip() else ""
        if not line.startswith(" "):
            folder = path if path.endswith("/") else None
            named.append(path)
        else:
            named.append(f"{folder}{path}")
    named = [n for n in named if n]
    assert len(named) >= 40
    missing = [n for n in named if not (ROOT / n).exists()]
    assert not missing, missing
