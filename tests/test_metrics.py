"""The metrics subsystem: protocol names, size checks, cached reference statistics, agreement with torch-fidelity,
DDP sharing, and evaluate.py on image folders and run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from PIL import Image

from dcgan.data import DataError, DigitsDataModule, MNISTDataModule
from dcgan.metrics import maths
from dcgan.metrics.build import Extractors, build_suite
from dcgan.metrics.callback import QualityMetrics
from dcgan.metrics.classifier import DigitClassifier
from dcgan.metrics.extractors import ClassifierExtractor
from dcgan.metrics.protocols import Protocol, count_label
from dcgan.metrics.reference import ReferenceStats, load_stats, save_stats
from dcgan.metrics.suite import QualitySuite, Settings
from dcgan.nets import Generator
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.evaluate import evaluate, load_images
from tests.formats import write_idx_images, write_idx_labels
from tests.inception_file import write_random_inception_weights

# --- protocol names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "metric", "n", "split"),
    [
        ("fid50k_train", "fid", 50000, "train"),
        ("kid10k_test", "kid", 10000, "test"),
        ("is50k", "is", 50000, None),
        ("cfid2.5k_test", "cfid", 2500, "test"),
        ("hfid200_test", "hfid", 200, "test"),
        ("val/class_balance1k", "class_balance", 1000, None),
    ],
)
def test_protocol_names_round_trip(name: str, metric: str, n: int, split: str | None) -> None:
    p = Protocol.parse(name)
    assert (p.metric, p.num_samples, p.split) == (metric, n, split)
    assert p.name == name.removeprefix("val/")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("fid", "expected <metric><count>"),
        ("lpips10k_test", "expected <metric><count>"),
        ("fid10k", "name a split"),
        ("is10k_test", "drop the split"),
        ("fid1_test", "at least 2"),
    ],
)
def test_bad_protocol_names_say_what_is_expected(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Protocol.parse(name)


def test_counts_read_like_stylegan() -> None:
    assert [count_label(n) for n in (200, 1000, 2500, 50000, 1234)] == ["200", "1k", "2.5k", "50k", "1234"]


def test_monitor_and_optuna_keys_follow_the_callback_settings() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        digits = compose("train")
        mnist = compose(
            "train", overrides=["data=mnist", "callbacks.quality.num_samples=2000", "hparams_search=optuna"]
        )
    assert digits.callbacks.best.monitor == "val/cfid1k_train"  # digits has no test split
    assert mnist.callbacks.best.monitor == "val/cfid2k_test"
    assert mnist.optimized_metric == "val/cfid2k_test"


# --- sizes are checked at start-up -------------------------------------------------------------------------------


def test_sizes_a_protocol_cannot_use_fail_when_the_callback_is_made() -> None:
    with pytest.raises(ValueError, match=r"KID subset size 500 > 200 generated images"):
        QualityMetrics(num_samples=200, kid_subset_size=500)
    with pytest.raises(ValueError, match=r"splits 5 images into 10"):
        QualityMetrics(num_samples=5)
    QualityMetrics(num_samples=200)  # KID's subset defaults to min(1000, images): small N is fine


def test_a_missing_reference_split_fails_before_training() -> None:
    from dcgan.metrics.build import check_data

    with pytest.raises(DataError, match=r"digits has no 'test' split"):
        check_data(DIGITS, [Protocol("cfid", 100, "test")])
    with pytest.raises(DataError, match="held-out scorer|no 'test' split"):
        check_data(DIGITS, [Protocol("hfid", 100, "test")])


def _epochs_scored(monitor: QualityMetrics, batches: int, max_epochs: int) -> list[int]:
    from types import SimpleNamespace

    scored = []
    for epoch in range(max_epochs):
        trainer = SimpleNamespace(
            num_training_batches=batches, current_epoch=epoch, max_epochs=max_epochs, max_steps=-1,
            global_step=2 * batches * (epoch + 1), should_stop=False,
        )  # fmt: skip
        if monitor.due(trainer):
            scored.append(epoch)
    return scored


def test_short_epochs_are_scored_every_few_epochs_and_the_last_always() -> None:
    monitor = QualityMetrics(num_samples=100, min_batches=100)
    assert _epochs_scored(monitor, batches=28, max_epochs=40) == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]  # digits
    assert _epochs_scored(monitor, batches=14, max_epochs=12) == [7, 11]  # every 8th, and the last epoch too
    assert _epochs_scored(monitor, batches=469, max_epochs=3) == [0, 1, 2]  # MNIST: every epoch
    assert _epochs_scored(QualityMetrics(num_samples=100, every_n_epochs=2, min_batches=0), 469, 5) == [1, 3, 4]
    with pytest.raises(ValueError, match="min_batches=-1"):
        QualityMetrics(num_samples=100, min_batches=-1)


# --- maths -------------------------------------------------------------------------------------------------------


def test_frechet_distance_of_gaussians_has_the_closed_form() -> None:
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    s1, s2 = np.eye(3), 4 * np.eye(3)
    # ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)) = 9 + 3 + 12 - 2 * 6
    assert maths.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(12.0)


def test_kid_is_near_zero_for_one_distribution_and_large_for_two() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(2.0, 1.0, size=(300, 8))
    same, _ = maths.kernel_distance(a, b, subsets=20, subset_size=100)
    different, _ = maths.kernel_distance(a, c, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < different
    with pytest.raises(ValueError, match="KID subset size 400 > 300"):
        maths.kernel_distance(a, b, subset_size=400)


def test_inception_score_is_the_number_of_classes_for_confident_even_predictions() -> None:
    logits = torch.eye(10).repeat(20, 1) * 50  # 200 confident predictions, 20 of each class
    mean, _ = maths.inception_score(logits, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-6)


# --- reference statistics: computed once, keyed by what they depend on --------------------------------------------

DIGITS = DigitsDataModule(image_size=16, channels=1)
DIGITS.setup()


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import dcgan.metrics.build as build

    calls: list[int] = []
    original = build.compute_reference

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(build, "compute_reference", counting)
    return calls


def _mnist(root: Path, n_test: int = 64) -> Path:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (96, 28, 28)))
    write_idx_labels(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 96))
    write_idx_images(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx_labels(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return root


def test_reference_statistics_are_cached_and_a_changed_file_or_setting_misses(tmp_path: Path, monkeypatch) -> None:
    root = _mnist(tmp_path / "data")
    how = Extractors(classifier_steps=5, cache_dir=tmp_path / "cache")
    calls = _count_builds(monkeypatch)

    def build(n: int = 50, steps: int = 5, image_size: int = 32) -> QualitySuite:
        dm = MNISTDataModule(str(root), image_size=image_size)
        dm.setup()
        h = Extractors(classifier_steps=steps, cache_dir=how.cache_dir)
        return build_suite(dm, [Protocol("cfid", n, "test")], h, Settings(batch_size=32))

    first = build()
    assert len(calls) == 1 and list((tmp_path / "cache" / "reference").glob("classifier-test-*.npz"))
    again = build()  # same files, split, N, extractor: read back, equal
    assert len(calls) == 1
    key = ("classifier", "test")
    np.testing.assert_array_equal(
        first.references[key].stats["features"][0], again.references[key].stats["features"][0]
    )
    build(n=40)  # another N
    assert len(calls) == 2
    build(steps=6)  # another classifier (other weights)
    assert len(calls) == 3
    build(image_size=16)  # another resolution
    assert len(calls) == 4
    rng = np.random.default_rng(1)  # the test split's images file changes (same size)
    write_idx_images(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (64, 28, 28)))
    build()
    assert len(calls) == 5


def test_pytorch_fid_stats_files_round_trip_and_are_checked(tmp_path: Path) -> None:
    mu, sigma = np.arange(3.0), np.eye(3)
    save_stats(tmp_path / "s.npz", mu, sigma)
    loaded = load_stats(tmp_path / "s.npz", dim=3)
    np.testing.assert_array_equal(loaded[0], mu)
    with pytest.raises(ValueError, match="this extractor gives 2048-d features"):
        load_stats(tmp_path / "s.npz", dim=2048)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="expected arrays 'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")
    ref = ReferenceStats(4, {"pool": (mu, sigma)}, {"pool": np.ones((4, 3), np.float32)})
    ref.to_npz(tmp_path / "r.npz")
    back = ReferenceStats.from_npz(tmp_path / "r.npz")
    assert back.num_images == 4 and set(back.features) == {"pool"}


# --- one forward per image ---------------------------------------------------------------------------------------


def _digit_suite(protocols: list[Protocol], seed: int = 0) -> QualitySuite:
    torch.manual_seed(0)
    extractor = ClassifierExtractor(DigitClassifier(1, 10).eval(), "classifier")
    from dcgan.metrics.build import real_batches
    from dcgan.metrics.reference import compute_reference

    ref = compute_reference(real_batches(DIGITS, 300, 100), extractor, {"features"})
    return QualitySuite(protocols, {"classifier": extractor}, {("classifier", "train"): ref}, Settings(seed=seed))


def test_each_extractor_runs_once_per_image_for_all_its_metrics() -> None:
    suite = _digit_suite(
        [Protocol("cfid", 120, "train"), Protocol("class_balance", 120), Protocol("cfid", 60, "train")]
    )
    calls = []
    extractor = suite.extractors["classifier"]
    extractor.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    torch.manual_seed(1)
    gen = Generator(16, 8, 16, 1).eval()
    results = suite.score(lambda z, labels: gen(z).float(), 16)
    assert sum(calls) == 120  # not 120 per metric
    assert set(results) == {"cfid120_train", "class_balance120", "cfid60_train"}


# --- DDP: each rank scores its share; equal to one process --------------------------------------------------------


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        suite = _digit_suite([Protocol("cfid", 150, "train"), Protocol("class_balance", 150)], seed=3)
        torch.manual_seed(1)
        gen = Generator(16, 8, 16, 1).eval()
        seen = []

        def sample(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
            seen.append(len(z))
            return gen(z).float()

        results = suite.score(sample, 16)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"results": results, "generated": sum(seen)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_metrics_equal_one_process(tmp_path: Path) -> None:
    suite = _digit_suite([Protocol("cfid", 150, "train"), Protocol("class_balance", 150)], seed=3)
    torch.manual_seed(1)
    gen = Generator(16, 8, 16, 1).eval()
    single = suite.score(lambda z, labels: gen(z).float(), 16)
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["generated"] for r in ranks] == [75, 75]  # each rank generated its half
    for r in ranks:
        for name, value in single.items():
            assert r["results"][name] == pytest.approx(value, rel=1e-5), name


# --- agreement with torch-fidelity, on a random-weights file in the real file's layout -----------------------------


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "pt_inception-random.pth")


def _png_folder(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        array = pixels.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(folder / f"{i:04d}.png")
    return folder


def _eval_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "evaluate",
            overrides=[f"paths.cache_dir={tmp_path / 'cache'}", "device=cpu", "probe.enabled=false", *overrides],
        )


def test_fid_kid_is_equal_torch_fidelity_on_the_same_folders_and_weights(tmp_path: Path, inception_file: Path) -> None:
    torch_fidelity = pytest.importorskip("torch_fidelity")
    rng = torch.Generator().manual_seed(0)
    digits = DigitsDataModule(image_size=32, channels=3)
    digits.setup()
    real = _png_folder(tmp_path / "real", digits.images[:24])
    tint = torch.randint(0, 80, (24, 3, 1, 1), generator=rng, dtype=torch.uint8)
    fake = _png_folder(tmp_path / "fake", (digits.images[100:124] // 2 + tint).clamp(0, 255).to(torch.uint8))

    cfg = _eval_cfg(
        tmp_path, "data=folder", f"data.data_dir={real}", "data.image_size=32", "data.channels=3",
        "data.num_workers=0", f"images={fake}", "quality.classifier=off", "quality.heldout=off",
        "quality.inception=on", f"quality.inception_weights={inception_file}", "quality.kid_subset_size=12",
        "batch_size=8",
    )  # fmt: skip
    ours = evaluate(cfg)["quality"]
    theirs = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), cuda=False, isc=True, fid=True, kid=True, kid_subset_size=12,
        feature_extractor_weights_path=str(inception_file), save_cpu_ram=True, verbose=False, cache=False,
    )  # fmt: skip
    pairs = {
        "fid24_train": theirs["frechet_inception_distance"],
        "kid24_train": theirs["kernel_inception_distance_mean"],
        "is24": theirs["inception_score_mean"],
    }
    for name, reference in pairs.items():
        assert ours[name] == pytest.approx(reference, rel=1e-3), (name, ours[name], reference)
    assert ours["fid24_train"] > 1e-3 and ours["is24"] > 1.0  # not a trivial agreement on zeros


# --- evaluate.py on images from any tool and on a whole run -------------------------------------------------------


def test_evaluate_scores_a_folder_and_an_npz_of_images(tmp_path: Path) -> None:
    digits = DigitsDataModule(image_size=32, channels=1)
    digits.setup()
    folder = _png_folder(tmp_path / "samples", digits.images[:300])
    np.savez(tmp_path / "samples.npz", images=digits.images[:300].permute(0, 2, 3, 1).numpy())
    assert torch.equal(load_images(folder, channels=1), load_images(tmp_path / "samples.npz"))
    cfg = _eval_cfg(tmp_path, f"images={folder}", "quality.classifier_steps=30", "stats.extractor=classifier",
                    f"stats.write={tmp_path / 'digits_stats.npz'}", "quality.inception=off")  # fmt: skip
    report = evaluate(cfg)
    assert set(report["quality"]) == {"cfid300_train", "class_balance300"}
    assert report["quality"]["cfid300_train"] < 5  # real digits against real digits
    assert load_stats(tmp_path / "digits_stats.npz", dim=128)[1].shape == (128, 128)  # the classifier's 128-d layer
    cfg = _eval_cfg(tmp_path, f"images={tmp_path / 'samples.npz'}", "quality.classifier_steps=30",
                    "stats.extractor=classifier", f"stats.read={tmp_path / 'digits_stats.npz'}",
                    "quality.inception=off")  # fmt: skip
    again = evaluate(cfg)["quality"]
    assert again["cfid300_stats"] == pytest.approx(again["cfid300_train"], rel=1e-6)  # the same statistics, by file


def test_evaluate_refuses_images_of_another_size(tmp_path: Path) -> None:
    folder = _png_folder(tmp_path / "big", torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"images=.*\(1, 28, 28\).*data.image_size"):
        evaluate(_eval_cfg(tmp_path, f"images={folder}", "quality.inception=off"))


def test_evaluate_a_run_dir_scores_every_checkpoint_with_a_table_and_plot(
    tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _eval_cfg(tmp_path, f"ckpt_path={tiny_run}", "num_samples=100", "quality.classifier_steps=20",
                    "data.image_size=16", "quality.inception=off")  # fmt: skip
    report = evaluate(cfg, out=tmp_path / "eval")
    steps = [row["global_step"] for row in report["checkpoints"]]
    assert steps == sorted(steps) and {6, 12} <= set(steps)  # step0000006, step0000012, last, best
    assert len(steps) == len(set(steps)), "each step scored once"
    final = next(row for row in report["checkpoints"] if row["global_step"] == 12)
    assert {"step0000012.ckpt", "last.ckpt"} <= {Path(f).name for f in final["same_weights"]}  # the files it lists
    assert all("cfid100_train" in row["quality"] for row in report["checkpoints"])
    assert (tmp_path / "eval" / "quality_vs_step.png").stat().st_size > 0
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["checkpoints"][0]["global_step"] == steps[0]
    assert "| step | cfid100_train | class_balance100 | checkpoint |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omegaconf import open_dict

    from dcgan.tasks.train import train
    from tests.conftest import TINY

    run = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [f"paths.output_dir={run}", f"paths.cache_dir={run / 'cache'}", *TINY, "trainer.max_steps=12"]
        cfg = compose("train", overrides=[*overrides, "callbacks.checkpoint.every_n_train_steps=6"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    train(cfg)
    return run
