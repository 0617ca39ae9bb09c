"""The generation task: ``generate(cfg)`` turns a checkpoint into grids, PNG folders, an .npz, interpolations and
the paper's vector arithmetic; ``load_model(path)`` gives the trained DCGAN for your own sampling."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dcgan.analysis import sampling
from dcgan.errors import UserError
from dcgan.lightning.module import DCGAN
from dcgan.progress import Progress

log = logging.getLogger("dcgan")


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA where there is a GPU, else the CPU; otherwise the device named (``cpu``, ``cuda:1``)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def load_model(ckpt_path: str, device: str = "auto", ema: bool = True) -> DCGAN:
    """A trained DCGAN from its checkpoint alone, in eval mode; ``ema=False`` samples G instead of its EMA."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint. Runs keep theirs in <run dir>/checkpoints/."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    unknown = set(checkpoint.get("hyper_parameters", {})) - set(inspect.signature(DCGAN.__init__).parameters)
    if unknown:
        raise UserError(
            f"ckpt_path={ckpt_path}: written by an earlier pre-release of dcgan (its model has {sorted(unknown)}, "
            "which this version's DCGAN does not take). Fix: retrain, or sample it with the commit that wrote it."
        )
    model = DCGAN.load_from_checkpoint(path, map_location=pick_device(device), weights_only=False).eval()
    if not ema:
        model.generator_ema = None
    return model


def _classes(model: DCGAN, labels: Any) -> torch.Tensor | None:
    """The classes a conditional model draws (``labels``, or all of them); None for an unconditional one."""
    num_classes = model.hparams.get("num_classes")
    if not num_classes:
        if labels:
            raise ValueError(f"labels={list(labels)}: this checkpoint's DCGAN is not conditional; drop labels=.")
        return None
    chosen = list(range(num_classes)) if labels is None else [int(c) for c in labels]
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad or not chosen:
        raise ValueError(f"labels={chosen}: expected class indices in [0, {num_classes - 1}], e.g. [3, 7].")
    return torch.tensor(chosen, device=model.device)


def _sample_classes(model: DCGAN, classes: torch.Tensor, z: torch.Tensor, group: int = 1) -> torch.Tensor:
    """G(z) with the classes taken in turn, each for ``group`` consecutive z (an interpolation path)."""
    turn = torch.arange(len(z), device=classes.device) // group
    return model.sample(z, classes[turn % len(classes)])


def _counted(batches: Iterator[torch.Tensor], progress: Progress) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch
        progress.advance(len(batch))


def generate(cfg: DictConfig) -> dict[str, Path]:
    """Write what ``conf/generate.yaml`` asks for; returns the paths written."""
    begin = time.perf_counter()
    model = load_model(cfg.ckpt_path, cfg.device, cfg.ema)
    out, nz, seed = Path(cfg.out), model.generator.nz, cfg.seed
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sample = model.sample
    classes = _classes(model, cfg.get("labels"))
    if classes is not None:  # conditional: every batch cycles through the chosen classes
        sample = functools.partial(_sample_classes, model, classes)
        columns = cfg.class_grid_columns
        z = sampling.noise(columns, nz, seed + 6).repeat(len(classes), 1)
        grid = model.sample(z, classes.repeat_interleave(columns))
        sampling.grid_image(grid, nrow=columns).save(written.setdefault("class_grid", out / "class_grid.png"))
    if cfg.grid:
        images = sample(sampling.noise(cfg.grid, nz, seed))
        sampling.grid_image(images, nrow=math.ceil(math.sqrt(cfg.grid))).save(
            written.setdefault("grid", out / "grid.png")
        )
    if cfg.n:
        z = sampling.noise(cfg.n, nz, seed + 1)
        with Progress(f"generating {cfg.n} PNGs into {out / 'samples'}", cfg.n) as progress:
            sampling.save_pngs(_counted(sampling.in_batches(sample, z, cfg.batch_size), progress), out / "samples")
        written["samples"] = out / "samples"
        if cfg.npz:
            with Progress(f"generating {cfg.n} images into {out / 'images.npz'}", cfg.n) as progress:
                sampling.save_npz(
                    _counted(sampling.in_batches(sample, z, cfg.batch_size), progress), out / "images.npz"
                )
            written["npz"] = out / "images.npz"
    pairs, steps = cfg.interpolation.pairs, cfg.interpolation.steps
    if pairs:
        along = sample if classes is None else functools.partial(_sample_classes, model, classes, group=steps)
        path = sampling.interpolation(
            along, sampling.noise(pairs, nz, seed + 2), sampling.noise(pairs, nz, seed + 3), steps
        )
        sampling.grid_image(path.flatten(0, 1), nrow=steps).save(
            written.setdefault("interpolation", out / "interpolation.png")
        )
        if cfg.interpolation.gif:
            frames = [sampling.grid_image(path[:, t], nrow=math.ceil(math.sqrt(pairs))) for t in range(steps)]
            sampling.save_gif(frames, written.setdefault("gif", out / "interpolation.gif"))
    arith = cfg.arithmetic
    if arith.pool:
        pool = sampling.noise(arith.pool, nz, seed + 4)
        nrow = math.ceil(math.sqrt(arith.pool))
        sampling.grid_image(sample(pool), nrow).save(written.setdefault("pool", out / "arithmetic_pool.png"))
        if arith.a or arith.b or arith.c:
            row = sample(sampling.arithmetic_row(pool, arith.a, arith.b, arith.c, arith.variants, seed + 5))
            sampling.grid_image(row, nrow=len(row)).save(written.setdefault("arithmetic", out / "arithmetic.png"))
    for name, path in written.items():
        log.info("%s: %s", name, path)
    log.info("generate.py: done in %.1f s", time.perf_counter() - begin)
    return written
