"""bench/time_to_quality.py end to end on a tiny MNIST, and its target check on hand-made tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "time_to_quality.py"


@pytest.fixture(scope="module")
def ttq() -> ModuleType:
    spec = importlib.util.spec_from_file_location("time_to_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_quality"] = module  # the recipe's Hydra config names its Snapshots callback by module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["time_to_quality"]


def test_bench_runs_every_arm_and_writes_table_and_plot(
    ttq: ModuleType, mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ttq"
    args = ["--data-dir", str(mnist_root), "--budgets", "0.004,0.008", "--samples", "64", "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--classifier-steps", "20", "--recipes", "mnist_fast,conditional"]
    assert ttq.main(args) == 0

    printed = capsys.readouterr().out
    names = ["plain", "plain+ema", "plain64", "plain64+ema", "mnist_fast", "conditional"]
    for name in names:
        assert any(line.startswith(f"{name} ") for line in printed.splitlines()), f"no table row for {name}"
        for budget in ("0.004", "0.008"):
            assert (out / f"{name}_{budget}.pt").is_file()
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == sorted(names)
    assert set(results["plain64"]["0.008"]) == {"val/cfid", "val/class_coverage"}
    assert "val/class_acc" in results["conditional"]["0.008"]  # a conditional G is scored with its labels
    assert (out / "time_to_quality.png").stat().st_size > 0
    assert "the target check needs budgets 5 and 20" in printed


def test_bench_refuses_an_unknown_baseline(ttq: ModuleType, mnist_root: Path) -> None:
    with pytest.raises(SystemExit):
        ttq.main(["--data-dir", str(mnist_root), "--baselines", "plain,plain128"])


def _row(*cells: tuple[float, float]) -> dict[float, dict[str, float]]:
    budgets = (2.5, 5.0, 10.0, 20.0)
    return {b: {"val/cfid": f, "val/class_coverage": c} for b, (f, c) in zip(budgets, cells, strict=True)}


@pytest.mark.parametrize(
    ("recipe", "met"),
    [
        (_row((9, 0.99), (4, 0.99), (3, 0.99), (2, 0.99)), True),
        (_row((9, 0.99), (6, 0.99), (3, 0.99), (2, 0.99)), False),  # 6 > half of plain's 10 at 20 min
        (_row((9, 0.99), (4, 0.97), (3, 0.99), (2, 0.99)), False),  # coverage at 5 min below 0.98
        (_row((9, 0.99), (4, 0.99), (3, 0.99), (6, 0.99)), False),  # loses to plain+ema at 20 min
    ],
)
def test_verdict(ttq: ModuleType, recipe: dict[float, dict[str, float]], met: bool) -> None:
    table = {
        "plain": _row((30, 0.9), (20, 0.9), (15, 0.9), (10, 0.9)),
        "plain+ema": _row((25, 0.9), (15, 0.9), (8, 0.9), (5, 0.9)),
        "r": recipe,
    }
    assert ttq.verdict(table, [2.5, 5.0, 10.0, 20.0], ["r"]) == {"r": met}
