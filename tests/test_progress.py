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
    extracting = lines(caplog, "extracting the features of 400 images")
    assert len(extracting) == 11  # start, 9 tenths (10 batches of 40), the time it took
    assert lines(caplog, "training the metric classifier") or lines(caplog, "reference statistics")
    assert lines(caplog, "evaluate.py: done in")
