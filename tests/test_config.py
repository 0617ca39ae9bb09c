from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dcgan.lightning.module import DCGAN
from dcgan.platform.configs import CONF_DIR

GROUPS = ["data", "model", "trainer", "logger", "callbacks", "experiment", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_file_composes_and_instantiates(make_cfg, group: str, option: str, tmp_path: Path) -> None:
    cfg = make_cfg([f"{group}={option}"])
    if OmegaConf.is_missing(cfg.data, "data_dir"):  # data=folder: the user names the folder
        cfg.data.data_dir = str(tmp_path)
    assert isinstance(instantiate(cfg.data), L.LightningDataModule)
    model = instantiate(cfg.model, _recursive_=False)
    assert isinstance(model, DCGAN)
    size = cfg.data.image_size
    assert model.sample().shape[1:] == (cfg.data.channels, size, size)
    for node in list(cfg.get("callbacks", {}).values()) + list(cfg.get("logger", {}).values()):
        instantiate(node)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # the rest of the GPU config must still build here
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


def test_the_model_follows_the_data_config(make_cfg) -> None:
    cfg = make_cfg(["data=mnist", "data.image_size=64", "data.channels=3"])
    assert cfg.model.generator.image_size == 64 and cfg.model.discriminator.channels == 3


def test_paper_defaults(make_cfg) -> None:
    cfg = make_cfg()
    assert cfg.model.optim.lr == 2e-4 and list(cfg.model.optim.betas) == [0.5, 0.999]
    assert cfg.model.generator.nz == 100 and cfg.model.generator.ngf == 64 and cfg.model.discriminator.ndf == 64
    assert cfg.data._target_ == "dcgan.data.DigitsDataModule"


def test_unknown_option_fails_with_hydras_message(make_cfg) -> None:
    with pytest.raises(MissingConfigException, match="Could not find 'data/nope'"):
        make_cfg(["data=nope"])


def test_unknown_key_fails_with_hydras_message(make_cfg) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.learning_rate'"):
        make_cfg(["model.learning_rate=1"])
