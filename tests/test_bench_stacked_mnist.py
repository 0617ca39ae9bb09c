"""bench/stacked_mnist.py end to end on a tiny MNIST: each run trains in its own process, is scored by
evaluate.py, keeps its result, and is skipped when the bench is invoked again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "stacked_mnist.py"


@pytest.mark.slow
def test_the_bench_trains_scores_saves_and_skips_finished_runs(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("stacked_mnist_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    args = ["--data-dir", str(mnist_root), "--out", str(out), "--arms", "dcgan:1,pacdcgan2:1", "--samples", "300"]
    args += ["--minutes", "0.05", "--heldout-steps", "20", "--data", "data.num_stacks=512", "data.num_test_stacks=300"]
    args += ["--extra", "model.generator.ngf=8", "callbacks.quality.classifier_steps=10", "data.batch_size=32"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    for arm in ("dcgan", "pacdcgan2"):
        result = json.loads((out / "runs" / f"{arm}-s0" / "result.json").read_text())
        assert 1 <= result["quality"]["modes300"] <= 300 and result["quality"]["kl300"] >= 0
        assert 0 <= result["quality"]["hrecall300_test"] <= 1 and result["global_step"] > 0
        assert (out / "runs" / f"{arm}-s0" / "grid.png").is_file()
        assert (out / "runs" / f"{arm}-s0" / "modes.png").is_file()
        report = json.loads((out / "runs" / f"{arm}-s0" / "eval" / "evaluation.json").read_text())
        assert Path(report["histogram_modes300"]).name == "histogram_modes300.png"  # evaluate.py drew it
        modes, kl = result["quality"]["modes300"], result["quality"]["kl300"]
        assert f"| {modes:.1f} (1 seed) | {kl:.3f} (1 seed) |" in (out / "table.md").read_text()  # the row is it
    floor = json.loads((out / "real_floor.json").read_text())
    assert 1 <= floor["modes300"] <= 300 and floor["kl300"] >= 0  # 300 real stacks of random-label digits
    table = (out / "table.md").read_text()
    assert "| PacGAN Table 2 (10 trials) | DCGAN | 78.9 +- 6.46 |" in table and "pacdcgan2: PacDCGAN2" in table
    assert "real stacks (300)" in table and "running dcgan seed 0" in printed
    before = (out / "runs" / "dcgan-s0" / "result.json").stat().st_mtime_ns
    assert bench.main(args) == 0  # everything is done: nothing runs again
    assert (out / "runs" / "dcgan-s0" / "result.json").stat().st_mtime_ns == before
    assert "running" not in capsys.readouterr().out
