"""The tests part of bench/gpu_check.sh's results file: each test of a pytest JUnit XML report with its outcome,
every skip with its reason, and the counts, so that a report of only skips cannot read as a pass.

    python bench/gpu_report.py junit.xml [--require-pass]

``--require-pass`` (a run on a GPU): exit 1 when no test passed, e.g. every one skipped because torch saw no CUDA.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def outcomes(path: str) -> list[tuple[str, str, str]]:
    """(test, outcome, detail) for each test case: passed, failed, error or skipped (with its reason)."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (found.get("message") or "").splitlines()[0] if found.get("message") else ""
        rows.append((name, outcome, detail))
    return rows


def main(argv: list[str]) -> int:
    require = "--require-pass" in argv
    argv = [a for a in argv if a != "--require-pass"]
    if len(argv) != 1:
        print(__doc__)
        return 2
    try:
        rows = outcomes(argv[0])
    except (OSError, ET.ParseError) as err:
        print(f"tests: no report ({err}): pytest did not finish (over its cap?)")
        return 1
    for name, outcome, detail in rows:
        print(f"  {outcome:8} {name}" + (f"  -- {detail}" if detail else ""))
    counts = Counter(outcome for _, outcome, _ in rows)
    print("tests: " + ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped") if counts[k]))
    if counts["passed"] == 0:
        print("tests: NOTHING RAN on a GPU here: every gpu test was skipped (reasons above)")
        return 1 if require else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
