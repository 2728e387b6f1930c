"""
C{docs/robustness.md} promises what sockplay does with each bad input or
fault and names the tests that hold each promise: every row names at least
one test, and every test it names exists.

A row's tests column is written C{`file.py::test_a`, `test_b`;
`other.py::test_c`}: a bare name belongs to the last file named before it.
C{(hostile)} after a name puts it in C{tests/hostile/} where two test files
share a name.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "robustness.md"

_TOKEN = re.compile(r"`([\w./]+\.py)?(?:::)?(test_\w+)?`( \(hostile\))?")


@cache
def definedTests(path: Path) -> frozenset[str]:
    """
    The names of the test functions defined at the top of C{path}.
    """
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    )


def filesNamed(name: str, hostile: bool) -> list[Path]:
    """
    The test files called C{name} (in C{tests/hostile/} only, if
    C{hostile}).
    """
    found = sorted(TESTS.rglob(name))
    if hostile:
        found = [path for path in found if path.parent.name == "hostile"]
    return found


def citations(text: str) -> list[tuple[str, str | None, bool]]:
    """
    Each test a piece of the doc names: its file, its name (C{None} for a
    whole file), and whether it is marked C{(hostile)}.
    """
    cited = []
    for group in text.split(";"):
        current: str | None = None
        for match in _TOKEN.finditer(group):
            file, name, hostile = match.groups()
            if file is not None:
                current = file.rsplit("/", 1)[-1]
            if current is None or (file is None and name is None):
                continue
            cited.append((current, name, hostile is not None))
    return cited


def rows() -> list[tuple[str, str]]:
    """
    Each table row of the doc: its first cell (the fault) and its last (the
    tests).
    """
    found = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[2] not in ("tests", "---"):
            found.append((cells[0], cells[2]))
    return found


def test_everyRowNamesATest() -> None:
    """
    Every promise in the tables names at least one test.
    """
    assert len(rows()) > 30
    for fault, tests in rows():
        assert citations(tests), f"no test named for: {fault}"


def test_everyNamedTestExists() -> None:
    """
    Every test the doc names, in the tables or in its prose, is defined in a
    test file of that name.
    """
    cited = citations(DOC.read_text().replace("\n", " "))
    assert len(cited) > 100
    for file, name, hostile in cited:
        paths = filesNamed(file, hostile)
        assert paths, f"docs/robustness.md names {file}, which is no test file"
        if name is not None:
            assert any(name in definedTests(path) for path in paths), (
                f"docs/robustness.md names {file}::{name}, which does not exist"
            )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("`a.py::test_x`, `test_y`; `b.py::test_z`",
         [("a.py", "test_x", False), ("a.py", "test_y", False), ("b.py", "test_z", False)]),
        ("`a.py::test_x` (hostile), `test_y`",
         [("a.py", "test_x", True), ("a.py", "test_y", False)]),
        ("`tls.py`; `--flag`, `test_lost`", [("tls.py", None, False)]),
    ],
)  # fmt: skip
def test_citations(text: str, expected: list[tuple[str, str | None, bool]]) -> None:
    """
    The parser reads a bare name as in the last file named, and ignores
    backticked text that is not a test (an option, an error message).
    """
    assert citations(text) == expected


def test_missingTestIsCaught(tmp_path: Path) -> None:
    """
    A name that no test file defines is not found: the check can fail.
    """
    module = tmp_path / "test_sample.py"
    module.write_text("def test_there():\n    pass\n\nclass C:\n    def test_inClass(self):\n"
                      "        pass\n")
    assert definedTests(module) == {"test_there"}
