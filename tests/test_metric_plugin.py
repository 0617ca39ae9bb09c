"""A metric defined here, outside src/: one class and a config node make it scored by the suite, logged during
training (and usable as the best-checkpoint monitor), and reported by evaluate.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcgan.errors import ArgumentError
from dcgan.metrics import METRICS, Metric, Protocol, QualitySuite, register_extra, register_metric
from dcgan.metrics.extractors import Extractor
from dcgan.metrics.reference import ReferenceStats
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.evaluate import evaluate
from dcgan.tasks.train import train
from tests.conftest import TINY


class Confidence(Metric):
    """The classifier's mean top-class probability on generated images: 1 when it is sure of every image."""

    name, extractor, output = "confidence", "classifier", "logits"

    def compute(self, values, reference, labels, settings) -> float:
        return values.softmax(1).max(1).values.mean().item()


class MeanGap(Metric):
    """The distance between the mean classifier features of generated and real images."""

    name, extractor, output, reference = "meangap", "classifier", "features", True

    def compute(self, values, reference, labels, settings) -> float:
        mu, _ = reference.stats[self.output]
        return float(np.linalg.norm(values.double().mean(0).numpy() - mu))


class Flat(Extractor):
    """Features: the pixels; logits: 50 x the pixels."""

    kind, digest, outputs = "classifier", "flat", ("features", "logits")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x.flatten(1), "logits": 50 * x.flatten(1)}


def test_a_registered_metric_scores_through_the_suite() -> None:
    register_metric(Confidence)
    register_metric(MeanGap)
    reference = ReferenceStats(num_images=2, stats={"features": (np.zeros(4), np.eye(4))})
    protocols = [Protocol.parse("confidence8"), Protocol.parse("meangap8_train"), Protocol("class_balance", 8)]
    suite = QualitySuite(protocols, {"classifier": Flat()}, {("classifier", "train"): reference})
    results = suite.score(lambda z, labels: torch.full((len(z), 1, 2, 2), 0.5), nz=3)
    # every image 0.5 everywhere: features (0.5,) * 4, uniform logits over 4 "classes"
    assert results == {
        "confidence8": pytest.approx(0.25),
        "meangap8_train": pytest.approx(1.0),  # ||(0.5, 0.5, 0.5, 0.5) - 0||
        "class_balance8": pytest.approx(0.25),  # every argmax is class 0
    }


def test_registering_is_idempotent_per_class_and_refuses_a_taken_name() -> None:
    register_metric(Confidence)
    first = METRICS["confidence"]
    assert register_extra({"again": Confidence()}) == ["confidence"] and METRICS["confidence"] is not first

    class Fid(Confidence):
        name = "fid"

    with pytest.raises(ValueError, match=r"metric name 'fid' is taken by dcgan\.metrics\.library\.FID"):
        register_metric(Fid)
    assert type(METRICS["fid"]).__name__ == "FID"
    with pytest.raises(ValueError, match=r"\.name='fid2': expected lower-case words"):
        register_metric(type("Fid2", (Confidence,), {"name": "fid2"}))
    with pytest.raises(ValueError, match=r"\.output='pool': the classifier extractor gives features, logits"):
        register_metric(type("Pool", (Confidence,), {"name": "pooled", "output": "pool"}))
    with pytest.raises(ArgumentError, match=r"extra\.x=3: expected a node whose _target_ names"):
        register_extra({"x": 3})


PLUGIN = [
    "+callbacks.quality.extra.confidence._target_=tests.test_metric_plugin.Confidence",
    "+callbacks.quality.extra.gap._target_=tests.test_metric_plugin.MeanGap",
]


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A 12-step digits run that also scores the two metrics above, its best checkpoint chosen by MeanGap."""
    run = tmp_path_factory.mktemp("plugin_run")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = [f"paths.output_dir={run}", f"paths.cache_dir={run / 'cache'}", *TINY, "trainer.max_steps=12"]
        cfg = compose("train", overrides=[*base, "callbacks.samples.every_n_steps=0", *PLUGIN,
                                          "callbacks.best.monitor=val/meangap64_train"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    with pytest.warns(UserWarning, match="FID/KID/IS are off"):
        metrics = train(cfg)
    return run, metrics


def test_training_logs_a_metric_from_a_config_node_and_can_monitor_it(plugin_run) -> None:
    run, metrics = plugin_run
    assert {"val/cfid64_train", "val/class_balance64", "val/confidence64", "val/meangap64_train"} <= set(metrics)
    assert 0.1 <= metrics["val/confidence64"] <= 1  # 10 classes
    assert metrics["val/meangap64_train"] > 0
    (event_file,) = (run / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    assert events.Scalars("val/confidence64")[-1].value == pytest.approx(metrics["val/confidence64"])
    (best,) = (run / "checkpoints").glob("best-step*.ckpt")  # monitored val/meangap64_train
    assert "meangap64_train" in str(torch.load(best, weights_only=False)["callbacks"])


def test_evaluate_reports_a_metric_from_a_config_node(plugin_run, tmp_path: Path) -> None:
    run, _ = plugin_run
    overrides = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "device=cpu", "data.image_size=16",
                 f"paths.cache_dir={run / 'cache'}", "num_samples=64", "quality.classifier_steps=20",
                 "quality.inception=off", "probe.enabled=false",
                 "+quality.extra.confidence._target_=tests.test_metric_plugin.Confidence",
                 "+quality.extra.gap._target_=tests.test_metric_plugin.MeanGap"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    report = evaluate(cfg, out=tmp_path)
    assert report["protocols"][-2:] == ["confidence64", "meangap64_train"]
    assert 0.1 <= report["quality"]["confidence64"] <= 1 and report["quality"]["meangap64_train"] > 0
    assert '"confidence64"' in (tmp_path / "evaluation.json").read_text()
