"""Quality metrics, the metric classifier, EMA, best checkpoints, generate and evaluate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcgan.analysis import sampling
from dcgan.data import DigitsDataModule, ImageFolderDataModule, to_unit_range
from dcgan.metrics import QualitySuite, cached_classifier, class_balance, train_classifier
from dcgan.metrics.callback import QualityMetrics
from dcgan.metrics.classifier import DigitClassifier, HeldOutClassifier
from dcgan.metrics.extractors import ClassifierExtractor
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.reference import compute_reference
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.evaluate import evaluate
from dcgan.tasks.generate import generate
from dcgan.tasks.train import train
from tests.conftest import TINY, fit
from tests.test_module import make_module, one_batch_data

DIGITS = DigitsDataModule(image_size=16, channels=1)
DIGITS.setup()


def real_batches(start: int, n: int = 400) -> list[torch.Tensor]:
    return [to_unit_range(DIGITS.images[i : i + 200]) for i in range(start, start + n, 200)]


def test_fid_pipeline_ranks_real_far_below_noise() -> None:
    """With a randomly initialised feature extractor (not trained: this tests the pipeline, not the features)."""
    torch.manual_seed(0)
    extractor = ClassifierExtractor(DigitClassifier(1, 10).eval(), "classifier")
    reference = compute_reference(iter(real_batches(0)), extractor, set())
    references = {("classifier", "train"): reference}
    suite = QualitySuite([Protocol("cfid", 400, "train")], {"classifier": extractor}, references)
    real_vs_real = suite.compute(suite.extract(iter(real_batches(800))), None)["cfid400_train"]
    real_vs_noise = suite.compute(suite.extract(torch.rand(200, 1, 16, 16) * 2 - 1 for _ in range(2)), None)
    assert real_vs_real * 10 < real_vs_noise["cfid400_train"]


def test_class_balance_is_one_for_even_classes_and_one_kth_for_a_single_class() -> None:
    even = torch.eye(10).repeat(20, 1)  # logits: every class 20 times
    single = torch.zeros(200, 10)
    single[:, 3] = 1
    assert class_balance(even, 10) == pytest.approx(1.0)
    assert class_balance(single, 10) == pytest.approx(0.1)


def test_metric_classifier_learns_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    labels = DIGITS.load_labels()
    _, accuracy = train_classifier(DIGITS.images, labels, 10, steps=150)
    assert accuracy > 0.6  # chance is 0.1
    first = cached_classifier(DIGITS.images, labels, 10, tmp_path, steps=20)
    monkeypatch.setattr("dcgan.metrics.classifier.train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = cached_classifier(DIGITS.images, labels, 10, tmp_path, steps=20)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))


def test_the_held_out_scorer_is_another_network_that_learns(tmp_path: Path) -> None:
    labels = DIGITS.load_labels()
    model, accuracy = train_classifier(DIGITS.images, labels, 10, steps=150, arch="heldout")
    assert isinstance(model, HeldOutClassifier) and accuracy > 0.6
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # not the digit classifier's family
    assert model.features(torch.zeros(2, 1, 16, 16)).shape == (2, HeldOutClassifier.num_features)
    with pytest.raises(ValueError, match="arch='resnet'"):
        cached_classifier(DIGITS.images, labels, 10, tmp_path, arch="resnet")


def test_metrics_follow_what_the_data_and_weights_allow(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DCGAN_INCEPTION_WEIGHTS", raising=False)
    folder = ImageFolderDataModule(data_dir=str(tmp_path))
    assert QualityMetrics().names(DIGITS) == ["val/cfid1k_train", "val/class_balance1k"]
    assert QualityMetrics().names(DIGITS, conditional=True)[-1] == "val/class_acc1k"
    assert QualityMetrics().available(folder) == []
    with pytest.raises(ValueError, match="classifier=on: expected auto or off for .*, which has no class labels"):
        QualityMetrics(classifier="on").available(folder)
    with pytest.raises(FileNotFoundError, match=r"Inception weights not found.*pt_inception-2015-12-05"):
        QualityMetrics(inception="on", inception_weights=str(tmp_path / "nope.pth")).available(DIGITS)
    with pytest.raises(ValueError, match="inception='maybe'"):
        QualityMetrics(inception="maybe")


def test_training_logs_offline_quality_per_epoch_and_keeps_the_best_checkpoint(make_cfg, tmp_path: Path) -> None:
    overrides = [*TINY, "trainer.max_epochs=2", "data.batch_size=256", "callbacks.samples.every_n_steps=0"]
    overrides.append("callbacks.quality.min_batches=0")  # score each of these 7-batch epochs
    with pytest.warns(UserWarning, match="FID/KID/IS are off for this run"):
        metrics = train(make_cfg(overrides))
    run = tmp_path / "run"
    assert {"val/cfid64_train", "val/class_balance64"} <= set(metrics)  # TINY scores 64 samples; digits: train split
    (event_file,) = (run / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    assert [s.step for s in events.Scalars("val/cfid64_train")] == [14, 28]  # 7 batches an epoch, 2 steps each
    assert 0 < events.Scalars("val/class_balance64")[-1].value <= 1
    (best,) = (run / "checkpoints").glob("best-step*.ckpt")
    assert torch.load(best, weights_only=False)["callbacks"]  # a full training checkpoint


def test_best_checkpoint_is_dropped_when_the_data_has_no_labels(make_cfg, tmp_path: Path) -> None:
    from tests.formats import write_folder

    cfg = make_cfg([*TINY, "data=folder", f"data.data_dir={write_folder(tmp_path / 'p')}", "data.num_workers=0",
                    "data.image_size=16", "data.batch_size=4", "trainer.max_epochs=1"])  # fmt: skip
    train(cfg)
    assert not list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_ema_tracks_the_generator_and_is_what_sample_uses() -> None:
    from dcgan.objective.ema import EMA

    module = make_module()
    module.ema = EMA(decay=0.9)
    module.generator_ema = __import__("copy").deepcopy(module.generator).requires_grad_(False)
    start = [p.clone() for p in module.generator.parameters()]
    datamodule, _ = one_batch_data()
    fit(module, datamodule, max_steps=2)  # one G step, in the warm-up: decay min(0.9, (1 + 1) / (10 + 1))
    d = 2 / 11
    for ema, g0, g1 in zip(module.generator_ema.parameters(), start, module.generator.parameters(), strict=True):
        torch.testing.assert_close(ema, d * g0 + (1 - d) * g1)
    assert any("generator_ema" in k for k in module.state_dict())
    module.generator_ema.eval()
    torch.testing.assert_close(module.sample(), module.generator_ema(module.fixed_noise))


def test_bad_ema_decay_is_refused_under_its_key(make_cfg) -> None:
    from dcgan.objective.ema import EMA
    from dcgan.platform.validation import ConfigError
    from dcgan.tasks.train import train

    with pytest.raises(ValueError, match=r"^decay=1.5: expected a decay in \(0, 1\)"):
        EMA(decay=1.5)
    with pytest.raises(ConfigError, match=r"^model.ema.decay=1.5: expected a decay in \(0, 1\)"):
        train(make_cfg(["model/ema=average", "model.ema.decay=1.5"]))


def test_slerp_starts_and_ends_at_the_endpoints() -> None:
    z0, z1 = torch.randn(3, 8), torch.randn(3, 8)
    path = sampling.slerp(z0, z1, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 8)
    torch.testing.assert_close(path[:, 0], z0, atol=1e-5, rtol=0)
    torch.testing.assert_close(path[:, -1], z1, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt_run")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        ema = ["model/ema=average", "model.ema.decay=0.9"]
        cfg = compose("train", overrides=[f"paths.output_dir={run}", f"paths.cache_dir={run / 'cache'}", *TINY,
                                          "trainer.max_steps=10", *ema])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


def gen_cfg(ckpt: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[f"ckpt_path={ckpt}", f"out={out}", "device=cpu", *overrides])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def test_generate_writes_pngs_npz_grids_interpolation_gif_and_arithmetic(tiny_ckpt: Path, tmp_path: Path) -> None:
    written = generate(gen_cfg(tiny_ckpt, tmp_path / "a", "n=37", "npz=true", "batch_size=10",
                               "arithmetic.a=[0,1]", "arithmetic.b=[2]", "arithmetic.c=[3,4]"))  # fmt: skip
    pngs = sorted((tmp_path / "a" / "samples").glob("*.png"))
    assert len(pngs) == 37 and Image.open(pngs[0]).size == (16, 16)
    assert np.load(tmp_path / "a" / "images.npz")["images"].shape == (37, 16, 16, 1)
    assert np.array_equal(np.load(tmp_path / "a" / "images.npz")["images"][5, ..., 0], np.asarray(Image.open(pngs[5])))
    assert Image.open(written["interpolation"]).size == (10 * 18 + 2, 8 * 18 + 2)  # 10 steps x 8 pairs of 16px
    gif = Image.open(written["gif"])
    assert gif.n_frames == 18  # 10 steps forward, 8 back
    assert Image.open(written["arithmetic"]).size[0] == 12 * 18 + 2  # 3 means + result + 8 variants
    # seeded: the same settings give the same bytes; another n (other batch shapes) the same images to
    # within one grey level (CPU convolutions round differently for different batch sizes)
    again = generate(
        gen_cfg(tiny_ckpt, tmp_path / "b", "n=37", "batch_size=10", "interpolation.pairs=0", "arithmetic.pool=0")
    )
    assert (tmp_path / "b" / "samples" / "000002.png").read_bytes() == pngs[2].read_bytes()
    assert set(again) == {"grid", "samples"}
    generate(gen_cfg(tiny_ckpt, tmp_path / "c", "n=3", "grid=0", "interpolation.pairs=0", "arithmetic.pool=0"))
    short = np.asarray(Image.open(tmp_path / "c" / "samples" / "000002.png"), dtype=int)
    assert np.abs(short - np.asarray(Image.open(pngs[2]), dtype=int)).max() <= 1


def test_generate_refuses_bad_arithmetic_indices_and_missing_checkpoints(tiny_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"out of range: \[99\]"):
        generate(gen_cfg(tiny_ckpt, tmp_path, "arithmetic.a=[99]", "arithmetic.b=[1]", "arithmetic.c=[2]"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        generate(gen_cfg(tmp_path / "missing.ckpt", tmp_path))


def test_evaluate_reports_quality_and_a_probe_above_chance(tiny_ckpt: Path, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={tiny_ckpt}", "device=cpu", "data.image_size=16",
                                             f"paths.cache_dir={tmp_path}", "num_samples=200",
                                             "quality.classifier_steps=50", "probe.train_size=600",
                                             "probe.test_size=300"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    report = evaluate(cfg)
    assert set(report["quality"]) == {"cfid200_train", "class_balance200"}
    assert report["probe"]["train_size"] == 600 and report["probe"]["num_features"] == 8 * 16 * (1 + 2)
    assert report["probe"]["accuracy"] > 3 * report["probe"]["chance"]  # D's features separate digits
    json.dumps(report)  # what evaluate.py writes
