"""Progress lines of the long commands: counted by work done, never by the clock, so a test can count them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from dcgan.progress import Progress
from tests.test_metrics import _eval_cfg, _png_folder


def lines(caplog, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(what)]


def test_a_line_per_tenth_then_the_time_it_took(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="dcgan"), Progress("scoring", 1000) as progress:
        for _ in range(10):
            progress.advance(100)
    got = lines(caplog, "scoring")
    assert got[0] == "scoring: 1000 images ..."
    assert [re.search(r"\((\d+)%\)", line).group(1) for line in got[1:-1]] == [str(10 * k) for k in range(1, 10)]
    assert re.fullmatch(r"scoring: 1000 images in \d+\.\d s(, \d+ images/s)?", got[-1])


def test_big_steps_log_once_each_and_a_quiet_progress_only_closes(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="dcgan"):
        with Progress("big", 1000) as progress:
            progress.advance(500)
            progress.advance(500)
        with Progress("quiet", 1000, enabled=False) as progress:
            progress.advance(1000)
    assert len(lines(caplog, "big: 500/1000")) == 1 and len(lines(caplog, "big")) == 3  # start, 50%, end
    assert len(lines(caplog, "quiet")) == 1  # the training monitor's scoring: only how long it took


def test_evaluate_logs_its_progress(tmp_path: Path, caplog) -> None:
    from dcgan.tasks.evaluate import evaluate

    folder = _png_folder(tmp_path / "imgs", torch.randint(0, 256, (400, 1, 16, 16), dtype=torch.uint8))
    cfg = _eval_cfg(tmp_path, f"images={folder}", "quality.classifier_steps=20", "quality.inception=off",
                    "data.image_size=16", "batch_size=40", "quality.heldout=off")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="dcgan"):
        evaluate(cfg)
    # each: its start, a line per tenth (9), the time it took
    assert len(lines(caplog, "extracting the features of 400 images")) == 11  # 10 batches of 40
    assert len(lines(caplog, "training the metric classifier")) == 11  # 20 steps
    assert len(lines(caplog, "reference statistics: classifier features of the train split")) == 11
    assert lines(caplog, "evaluate.py: done in")


def test_generate_logs_its_progress(tmp_path: Path, caplog, make_cfg) -> None:
    from dcgan.tasks.generate import generate
    from tests.test_quality import gen_cfg

    ckpt = _tiny_ckpt(make_cfg, tmp_path)
    with caplog.at_level(logging.INFO, logger="dcgan"):
        generate(gen_cfg(ckpt, tmp_path / "gen", "n=50", "batch_size=5", "interpolation.pairs=0", "arithmetic.pool=0"))
    assert len(lines(caplog, "generating 50 PNGs")) == 11  # 10 batches of 5


def test_scoring_the_checkpoints_of_a_run_dir_logs_a_line_per_checkpoint(tmp_path: Path, caplog, make_cfg) -> None:
    from dcgan.tasks.evaluate import evaluate

    ckpt = _tiny_ckpt(make_cfg, tmp_path)
    cfg = _eval_cfg(tmp_path, f"ckpt_path={ckpt.parent.parent}", "num_samples=40", "quality.classifier_steps=20",
                    "data.image_size=16", "quality.inception=off", "quality.heldout=off")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="dcgan"):
        report = evaluate(cfg, out=tmp_path / "eval")
    scored = lines(caplog, "scoring checkpoints")
    assert len(report["checkpoints"]) == 2  # step 4 and step 8 (last.ckpt holds step 8 too: scored once)
    assert len(scored) == 3  # its start, the first of the two (50%), the time it took


def _tiny_ckpt(make_cfg, tmp_path: Path) -> Path:
    """A run with step0000004.ckpt, step0000008.ckpt and last.ckpt (step 8 again)."""
    from dcgan.tasks.train import train
    from tests.conftest import TINY

    run = tmp_path / "run"
    every = "callbacks.checkpoint.every_n_train_steps=4"
    train(make_cfg([*TINY, "trainer.max_steps=8", "~callbacks.quality", "~callbacks.best", every], run_dir=run))
    return run / "checkpoints" / "last.ckpt"
