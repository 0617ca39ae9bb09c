"""Mode collapse made visible (issue 23): the mode count and KL of Stacked MNIST, the per-channel scorer, the
protocol names of the collapse metrics, and the alarm that says when a diversity score falls."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from dcgan.errors import ArgumentError
from dcgan.lightning.callbacks import CollapseAlarm
from dcgan.metrics import METRICS, Protocol, register_extra
from dcgan.metrics.extractors import PerChannelExtractor
from dcgan.metrics.maths import mode_histogram, modes_and_kl
from dcgan.tasks.train import train
from tests.conftest import TINY


def one_hot_logits(modes: list[int], k: int = 1000) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(modes), k).float() * 10


def test_modes_and_kl_have_the_published_meaning() -> None:
    assert modes_and_kl(one_hot_logits(list(range(1000)) * 26)) == (1000, pytest.approx(0.0, abs=1e-12))
    modes, kl = modes_and_kl(one_hot_logits([7] * 100))  # everything in one mode: KL = log 1000
    assert modes == 1 and kl == pytest.approx(math.log(1000))
    modes, kl = modes_and_kl(one_hot_logits([0] * 50 + [1] * 50))  # two modes, half each: log(1000 / 2)
    assert modes == 2 and kl == pytest.approx(math.log(500))
    assert mode_histogram(one_hot_logits([3, 3, 5], k=8)).tolist() == [0, 0, 0, 2, 0, 1, 0, 0]


class Brightness(nn.Module):
    """A 'digit classifier' that reads the digit off a one-channel image's mean value: pixel value d/10 -> d."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None]  # (B, 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return -((f - torch.arange(10) / 10) ** 2) * 1e4  # (B, 10): peaked at the nearest d/10


def test_the_per_channel_scorer_reads_a_stack_as_one_of_1000_modes() -> None:
    digits = torch.tensor([[4, 7, 3], [0, 0, 9], [9, 9, 9]])
    images = (digits.float() / 10)[:, :, None, None].expand(-1, -1, 8, 8)  # channel c holds digit d_c
    out = PerChannelExtractor(Brightness(), "heldout")(images)
    assert out["logits"].shape == (3, 1000) and out["features"].shape == (3, 3)
    assert out["logits"].argmax(1).tolist() == [473, 9, 999]  # the first channel is the most significant digit
    assert torch.allclose(out["logits"].exp().sum(1), torch.ones(3))  # log-probabilities over the 1,000 modes


def test_collapse_protocol_names_carry_samples_scorer_and_split() -> None:
    assert Protocol.parse("modes26k") == Protocol("modes", 26000) and METRICS["modes"].extractor == "heldout"
    assert Protocol.parse("kl26k").name == "kl26k" and METRICS["cmodes"].extractor == "classifier"
    for name, extractor in [("hprecision10k_test", "heldout"), ("crecall1k_train", "classifier")]:
        assert Protocol.parse(name).extractor == extractor and Protocol.parse(name).name == name
    assert Protocol.parse("coverage10k_test").output == "pool"  # Naeem's coverage on Inception's pool3
    assert Protocol.parse("class_balance1k").name == "class_balance1k"  # the class-entropy score, renamed
    with pytest.raises(ValueError, match="compares with real images: name a split"):
        Protocol.parse("hdensity10k")
    with pytest.raises(ValueError, match="uses no real images: drop the split"):
        Protocol("modes", 26000, "test")
    with pytest.raises(ValueError, match="heldout scorer is trained on the test split; use hrecall100_test"):
        METRICS["hrecall"].check(Protocol("hrecall", 100, "train"), None)
    assert register_extra({"a": "hrecall", "b": "cmodes"}) == ["hrecall", "cmodes"]
    with pytest.raises(ArgumentError, match="extra.x=recal"):
        register_extra({"x": "recal"})


class Scores:
    """A stand-in trainer: the metric a quality score would log, one epoch end at a time."""

    def __init__(self, tmp_path: Path) -> None:
        self.checkpoints = tmp_path / "checkpoints"
        self.checkpoints.mkdir()
        self.events: list[tuple[dict, int]] = []
        logger = SimpleNamespace(log_metrics=lambda metrics, step: self.events.append((metrics, step)))
        self.trainer = SimpleNamespace(
            callback_metrics={}, global_step=0, loggers=[logger], is_global_zero=True,
            checkpoint_callbacks=[SimpleNamespace(dirpath=str(self.checkpoints))],
        )  # fmt: skip

    def run(self, alarm: CollapseAlarm, values: list[float], every: int = 100, key: str = "val/cmodes1k") -> None:
        for i, value in enumerate(values, start=1):
            self.trainer.global_step = i * every
            self.trainer.callback_metrics = {key: torch.tensor(value)}
            alarm.on_train_epoch_end(self.trainer, None)
            (self.checkpoints / f"step{i * every:07d}.ckpt").touch()  # Lightning saves after the other callbacks


def test_the_alarm_fires_once_on_a_fall_names_the_best_checkpoint_and_rearms(tmp_path: Path, caplog) -> None:
    scores, alarm = Scores(tmp_path), CollapseAlarm("val/cmodes1k", fraction=0.8)
    with caplog.at_level(logging.WARNING, logger="dcgan.lightning.callbacks"):
        scores.run(alarm, [200, 600, 900, 850, 700, 650, 880, 500])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and alarm.falls == [500, 800]  # 700 < 0.8 x 900; again after 880 re-armed it
    assert (
        "Collapse alarm at global step 500: val/cmodes1k=700 fell below 0.8 x the run's best 900 (step 300)"
        in (messages[0])
    )
    assert messages[0].endswith(f"{scores.checkpoints / 'step0000300.ckpt'}.")
    assert scores.events == [({"alarm/collapse": 1.0}, 500), ({"alarm/collapse": 1.0}, 800)]


def test_the_alarm_stays_quiet_on_a_flat_or_rising_curve(tmp_path: Path, caplog) -> None:
    scores, alarm = Scores(tmp_path), CollapseAlarm("val/cmodes1k", fraction=0.8)
    with caplog.at_level(logging.WARNING, logger="dcgan.lightning.callbacks"):
        scores.run(alarm, [700, 720, 690, 710, 760, 700, 740, 800, 790])
    assert alarm.falls == [] and scores.events == [] and not caplog.records
    assert alarm.best == 800 and alarm.best_step == 800


def test_the_alarm_watches_a_lower_is_better_score_in_min_mode(tmp_path: Path, caplog) -> None:
    scores, alarm = Scores(tmp_path), CollapseAlarm("val/ckl1k", fraction=0.8, mode="min")
    with caplog.at_level(logging.WARNING, logger="dcgan.lightning.callbacks"):
        scores.run(alarm, [2.0, 1.0, 0.8, 0.9, 1.1], key="val/ckl1k")  # 1.1 > 0.8 / 0.8 = 1.0: a fall
    assert alarm.falls == [500] and alarm.best == pytest.approx(0.8) and alarm.best_step == 300
    assert "val/ckl1k=1.1 rose above 1/0.8 x the run's best 0.8 (step 300)" in caplog.records[0].getMessage()


def test_a_resumed_alarm_keeps_its_best_only_for_the_same_monitor(tmp_path: Path) -> None:
    scores, alarm = Scores(tmp_path), CollapseAlarm("val/cmodes1k")
    scores.run(alarm, [300, 600])
    same, other = CollapseAlarm("val/cmodes1k"), CollapseAlarm("val/class_balance1k")
    same.load_state_dict(alarm.state_dict())
    other.load_state_dict(alarm.state_dict())
    assert (same.best, same.best_step) == (600, 200) and (other.best, other.best_step) == (None, -1)


def test_the_alarm_checks_its_arguments() -> None:
    with pytest.raises(ArgumentError, match="fraction=1.5: expected a share of the best value in"):
        CollapseAlarm("val/cmodes1k", fraction=1.5)
    with pytest.raises(ArgumentError, match="monitor="):
        CollapseAlarm("")
    with pytest.raises(ArgumentError, match="mode=up: expected max"):
        CollapseAlarm("val/cmodes1k", mode="up")


def test_the_alarm_reads_the_score_the_quality_callback_logged_in_a_real_run(make_cfg) -> None:
    overrides = [*TINY, "trainer.max_epochs=2", "data.batch_size=256", "callbacks.quality.min_batches=0"]
    cfg = make_cfg([*overrides, "callbacks.samples.every_n_steps=0", "callbacks.collapse.fraction=0.5"])
    assert cfg.callbacks.collapse.monitor == "val/class_balance64"
    with pytest.warns(UserWarning, match="FID/KID/IS are off"):
        metrics = train(cfg)
    assert 0 < metrics["val/class_balance64"] <= 1
    # the alarm saw both epochs' scores: its best is the higher of the two logged ones, at that score's step
    (events_file,) = (Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file))
    events.Reload()
    logged = {s.step: s.value for s in events.Scalars("val/class_balance64")}
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("CollapseAlarm")]
    assert sorted(logged) == [14, 28] and state["monitor"] == "val/class_balance64"
    assert state["best_step"] == max(logged, key=logged.get) and state["best"] == pytest.approx(max(logged.values()))
