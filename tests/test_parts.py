"""A new GAN idea is one class plus one config file: a penalty and a D wrapper defined here, with their YAML in a
user's config dir, train and are rebuilt from the checkpoint with no edit under src/ (issue 22)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import nn

from dcgan.lightning.module import DCGAN
from dcgan.objective import Penalty, PhaseInputs
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.train import train
from tests.conftest import TINY


class Drift(Penalty):
    """Karras et al. 2018's drift term, eps E[D(x)^2] on real scores: keeps a critic's outputs near zero."""

    def __init__(self, weight: float = 1e-3, interval: int = 1) -> None:
        super().__init__(weight, interval)

    def __call__(self, inputs: PhaseInputs) -> torch.Tensor:
        return inputs.real_scores.float().pow(2).mean()


class Packed(nn.Module):
    """PacGAN (Lin et al. 2018): D judges ``packing`` images at once, stacked along the channels."""

    mixes_batch = True  # each score depends on several images

    def __init__(self, inner: nn.Module, packing: int = 2) -> None:
        super().__init__()
        self.inner, self.packing = inner, packing
        self.num_classes = inner.num_classes

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x[: b - b % self.packing].reshape(b // self.packing, self.packing * c, h, w)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.inner.features(self.pack(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(self.pack(x))


CONFIGS = {
    "model/penalty/drift.yaml": "drift:\n  _target_: tests.test_parts.Drift\n  weight: 0.001\n",
    "model/discriminator/packed.yaml": (
        "defaults:\n  - dcgan@inner\n  - _self_\n"
        "_target_: tests.test_parts.Packed\npacking: 2\ninner:\n  channels: 2   # packing x the digits' 1 channel\n"
    ),
}


@pytest.fixture
def my_configs(tmp_path: Path) -> Path:
    for name, text in CONFIGS.items():
        (tmp_path / "my_configs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "my_configs" / name).write_text(text)
    return tmp_path / "my_configs"


def test_a_penalty_and_a_d_wrapper_from_outside_the_package_train_and_are_rebuilt(my_configs: Path, tmp_path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"hydra.searchpath=[file://{my_configs}]", f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}", *[o.replace("discriminator.", "discriminator.inner.") for o in TINY],  # noqa: E501
            "trainer.max_steps=8", "~callbacks.quality",
            "~callbacks.best", "model/penalty=[drift]", "model/discriminator=packed",
        ])  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    metrics = train(cfg)
    assert math.isfinite(metrics["loss/drift"]) and metrics["loss/drift"] > 0
    model = DCGAN.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert isinstance(model.discriminator, Packed) and model.discriminator.inner.net[0].in_channels == 2
    drift = model.objective.penalties["drift"]
    assert isinstance(drift, Drift) and drift.weight == 0.001
    with torch.no_grad():  # 8 images -> 4 packs of 2 -> 4 scores
        assert model.discriminator(torch.randn(8, 1, 16, 16)).shape == (4,)


def test_a_per_image_penalty_on_a_packed_d_warns() -> None:
    inner = {"_target_": "dcgan.nets.Discriminator", "ndf": 8, "image_size": 16, "channels": 2, "norm": "none"}
    with pytest.warns(UserWarning, match="Penalty gp is per image, but D \\(Packed\\) mixes"):
        DCGAN(
            generator={"_target_": "dcgan.nets.Generator", "nz": 8, "ngf": 8, "image_size": 16, "channels": 1},
            discriminator={"_target_": "tests.test_parts.Packed", "inner": inner},
            optim={"_target_": "torch.optim.Adam", "_partial_": True},
            penalty={"gp": {"_target_": "dcgan.objective.penalties.GradientPenalty"}},
        )
