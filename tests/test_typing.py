"""Static typing: mypy --strict on small programs proves ``Task`` is generic.

One mypy run checks every file in ``tests/typing_cases``. Each line that must fail carries
``# E: [error-code]``; each ``reveal_type`` carries ``# N: <type>``; every other line must be
clean, so a regression that makes calls unchecked (everything ``Any``) fails here too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "typing_cases"
ROOT = Path(__file__).parent.parent
_MARKER = re.compile(r"#\s*([EN]):\s*(.+?)\s*$")
_OUTPUT = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")


def expected_findings() -> set[tuple[str, int, str]]:
    found: set[tuple[str, int, str]] = set()
    for path in sorted(CASES.glob("cases_*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = _MARKER.search(line)
            if match:
                kind, what = match.groups()
                found.add((path.name, number, f"{kind}: {what}"))
    return found


def actual_findings(output: str) -> set[tuple[str, int, str]]:
    found: set[tuple[str, int, str]] = set()
    for line in output.splitlines():
        match = _OUTPUT.match(line)
        if match is None:
            continue
        path = Path(match["path"])
        if path.parent.name != CASES.name:
            continue  # the package itself is checked by CI's own mypy run
        name, number = path.name, int(match["line"])
        text = match["text"]
        if match["kind"] == "error":
            code = re.search(r"\[([a-z-]+)\]$", text)
            found.add((name, number, f"E: [{code.group(1) if code else text}]"))
        elif text.startswith("Revealed type is "):
            revealed = text.removeprefix("Revealed type is ").strip('"').replace("builtins.", "")
            found.add((name, number, f"N: {revealed}"))
    return found


@pytest.mark.timeout(300)
def test_tasks_are_generic_under_mypy_strict() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, output
    expected = expected_findings()
    actual = actual_findings(output)
    assert len(expected) >= 20  # the cases really exercise the checker
    assert sorted(actual - expected) == [], f"unexpected mypy findings:\n{output}"
    assert sorted(expected - actual) == [], f"expected mypy findings missing:\n{output}"
