"""The conditional DCGAN: class-dependent samples, one grid row per class, val/class_acc, generate labels=."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from dcgan.nets import Discriminator, Generator
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.generate import generate, load_model
from dcgan.tasks.train import train
from tests.conftest import TINY


def test_the_label_changes_the_image_for_the_same_z() -> None:
    torch.manual_seed(0)
    g = Generator(nz=16, ngf=8, image_size=16, channels=1, num_classes=10).eval()
    z = torch.randn(1, 16).repeat(2, 1)
    a, b = g(z, torch.tensor([3, 7]))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(g(z[:1], torch.tensor([3]))[0], a)
    with pytest.raises(ValueError, match="pass the class labels"):
        g(z)


def test_projection_discriminator_scores_depend_on_the_label() -> None:
    torch.manual_seed(0)
    d = Discriminator(ndf=8, image_size=16, channels=1, num_classes=10)
    with torch.no_grad():
        d.embed.weight.normal_()  # as after some training; the N(0, 0.02) init is nearly label-blind
    x = torch.randn(1, 1, 16, 16).repeat(2, 1, 1, 1)
    s = d.eval()(x, torch.tensor([0, 1]))
    assert s.shape == (2,) and s[0] != s[1]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    run = tmp_path_factory.mktemp("conditional")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={run}", f"paths.cache_dir={run / 'cache'}", *TINY,
                                          "experiment=conditional", "model.num_fixed_samples=40",
                                          "trainer.max_epochs=1", "callbacks.samples.every_n_steps=0"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return run, train(cfg)


def test_conditional_training_logs_class_accuracy_and_class_rows(conditional_run) -> None:
    conditional_run, metrics = conditional_run
    assert {"val/cfid64_train", "val/class_balance64", "val/class_acc64"} <= set(metrics)  # TINY: 64 samples, digits
    assert 0.0 <= metrics["val/class_acc64"] <= 1.0
    model = load_model(str(conditional_run / "checkpoints" / "last.ckpt"), "cpu")
    assert model.fixed_labels.tolist() == [c for c in range(10) for _ in range(4)]
    assert torch.equal(model.fixed_noise[:4], model.fixed_noise[4:8])  # the same z down each column
    (grid,) = sorted((conditional_run / "samples").glob("fixed_noise_step*.png"))[-1:]
    assert Image.open(grid).size == (4 * 18 + 2, 10 * 18 + 2)  # 4 columns x one row per class of 16px


def test_generate_draws_the_asked_classes(conditional_run, tmp_path: Path) -> None:
    conditional_run, _ = conditional_run
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[f"ckpt_path={conditional_run / 'checkpoints' / 'last.ckpt'}",
                                             f"out={tmp_path}", "device=cpu", "labels=[3,7]", "n=4",
                                             "class_grid_columns=5", "arithmetic.pool=0"])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    written = generate(cfg)
    assert Image.open(written["class_grid"]).size == (5 * 18 + 2, 2 * 18 + 2)
    assert len(list((tmp_path / "samples").glob("*.png"))) == 4
    cfg.labels = [12]
    with pytest.raises(ValueError, match=r"labels=\[12\]: expected class indices in \[0, 9\]"):
        generate(cfg)


def test_a_conditional_model_needs_labelled_data(make_cfg, tmp_path: Path) -> None:
    from tests.formats import write_celeba

    cfg = make_cfg([*TINY, "experiment=conditional", "data=celeba", f"data.data_dir={write_celeba(tmp_path)}",
                    "debug=fdr"])  # fmt: skip
    with pytest.raises(ValueError, match="has no classes"):
        train(cfg)
