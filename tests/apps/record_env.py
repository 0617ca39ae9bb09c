"""A Hydra app on the project's config whose jobs only record where they ran: the process, the GPUs it may see and
its device overrides. Tests of ``hydra/launcher=gpus`` run it without GPUs (nothing here touches CUDA)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dcgan.platform.configs import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def record(cfg: DictConfig) -> int:
    seen = {
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slot": os.environ.get("DCGAN_LAUNCH_SLOT"),
        "accelerator": cfg.trainer.accelerator,
        "devices": OmegaConf.to_container(cfg.trainer.devices) if OmegaConf.is_list(cfg.trainer.devices) else None,
    }
    (Path(HydraConfig.get().runtime.output_dir) / "where.json").write_text(json.dumps(seen))
    return 0


if __name__ == "__main__":
    record()
