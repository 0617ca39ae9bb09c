"""The visualization task: ``visualize(cfg)`` shows what a trained DCGAN learned, as Radford et al. (2015) do in
sec. 6: D's features by guided backpropagation beside a random D's (Figure 5), the outermost filters, the nearest
training images of samples and a copy rate (memorization, sec. 6.1), and a walk in z. PNGs, a GIF, ``summary.json``
and an ``index.html`` that shows them all, in ``out``; optionally the figures in the run's TensorBoard too."""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from PIL import Image

from dcgan.analysis import guided, neighbours, sampling
from dcgan.data.base import DataError, to_unit_range
from dcgan.errors import ArgumentError
from dcgan.progress import Progress

log = logging.getLogger("dcgan")


class Figures:
    """The figures written so far: file name -> caption, for ``index.html`` and the logger."""

    MIN_WIDTH = 320  # pixels: a grid of 4x4 filters is about 80 wide

    def __init__(self, out: Path) -> None:
        self.out = out
        self.captions: dict[str, str] = {}

    def add(self, name: str, image: Image.Image, caption: str) -> None:
        """Save ``image`` (a small one enlarged by a whole factor, pixels kept sharp, to be seen on the page)."""
        factor = -(-self.MIN_WIDTH // image.width)
        if factor > 1:
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
        image.save(self.out / name)
        self.captions[name] = caption

    def html(self, title: str, facts: list[str]) -> Path:
        items = "\n".join(
            f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}">'
            f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>"
            for name, caption in self.captions.items()
        )
        notes = "".join(f"<li>{html.escape(f)}</li>" for f in facts)
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%;image-rendering:pixelated}"
            "figure{margin:2em 0}figcaption{color:#333}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><ul>{notes}</ul>{items}</body></html>"
        )
        path = self.out / "index.html"
        path.write_text(page)
        return path


def _ordinal(value: float) -> str:
    """1 -> 1st, 2 -> 2nd, 0.5 -> 0.5th, 11 -> 11th."""
    if value != int(value):
        return f"{value:g}th"
    n = int(value)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _stage(what: str) -> Any:
    """A context manager that logs ``what`` and, when it ends, how long it took."""

    class Stage:
        def __enter__(self) -> None:
            self.start = time.perf_counter()
            log.info("%s ...", what)

        def __exit__(self, *exc: object) -> None:
            log.info("%s: done in %.1f s", what, time.perf_counter() - self.start)

    return Stage()


def _rows(groups: list[torch.Tensor]) -> torch.Tensor:
    """Rows of images of equal length, one after another, for ``grid_image(nrow=len(row))``."""
    return torch.cat(groups)


def _gray_or_rgb(maps: torch.Tensor, channels: int) -> torch.Tensor:
    return maps if channels in (1, 3) else maps.mean(dim=1, keepdim=True)


def _feature_view(
    d: torch.nn.Module, pool: torch.Tensor, layer: int, k: int, n: int
) -> tuple[torch.Tensor, list[int], list[torch.Tensor]]:
    """Per top channel of ``d``: its ``n`` most exciting pool images, then their guided maps (rows of 2n images);
    the channels; and the pool indices of each channel's images."""
    scores = guided.channel_scores(d, pool, layer)
    rows, channels, chosen_at = [], [], []
    for channel in guided.top_channels(scores, k).tolist():
        top = guided.top_images(scores, channel, n)
        chosen = pool[top]
        maps = guided.to_display(guided.guided_maps(d, chosen, channel, layer))
        rows.append(torch.cat([chosen.cpu(), _gray_or_rgb(maps, chosen.size(1)).cpu()]))
        channels.append(channel)
        chosen_at.append(top.cpu())
    return _rows(rows), channels, chosen_at


def class_purity(chosen_at: list[torch.Tensor], labels: torch.Tensor) -> float:
    """The mean, over channels, of the share of a channel's top images in their most common class: 1 when every
    channel responds to one class, about 1/classes (plus chance agreement) when the channels ignore the class."""
    shares = [float(labels[top].bincount().max()) / len(top) for top in chosen_at]
    return sum(shares) / len(shares)


def _neighbour_grid(samples: torch.Tensor, train: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of (sample, its k nearest training images)."""
    return torch.cat([torch.cat([s[None], train[i]]) for s, i in zip(samples, indices, strict=True)])


def _draw(dm: Any, split: str, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` images of ``split``, drawn with ``seed`` (all, in order, when it has fewer)."""
    total = dm.for_split(split).num_images()
    return (
        torch.arange(total) if n >= total else torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    )


def _real(dm: Any, split: str, n: int, seed: int) -> torch.Tensor:
    """``n`` images of ``split`` in [-1, 1], drawn with ``seed`` (all, in order, when it has fewer)."""
    return to_unit_range(dm.for_split(split).images_at(_draw(dm, split, n, seed)))


def _check(cfg: DictConfig) -> None:
    f, nb, cp = cfg.features, cfg.neighbours, cfg.copy_rate
    counts = (
        ("features.channels", f.channels, 1),
        ("features.images", f.images, 1),
        ("features.pool", f.pool, 2),
        ("neighbours.samples", nb.samples, 1),
        ("neighbours.k", nb.k, 1),
        ("neighbours.train", nb.train, 10),
        ("copy_rate.samples", cp.samples, 1),
        ("copy_rate.test", cp.test, 10),
        ("walk.pairs", cfg.walk.pairs, 1),
        ("walk.steps", cfg.walk.steps, 2),
    )
    for key, value, low in counts:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ArgumentError(key, value, f"an integer >= {low}", low)
    if not 0 < cp.percentile < 100:
        raise ArgumentError("copy_rate.percentile", cp.percentile, "a percentile in (0, 100)", 1.0)
    if cfg.features.images > cfg.features.pool:
        raise ArgumentError("features.images", cfg.features.images, f"at most features.pool={cfg.features.pool}", 6)
    if cfg.neighbours.heldout not in ("auto", "on", "off"):
        raise ArgumentError("neighbours.heldout", cfg.neighbours.heldout, "auto, on or off", "auto")
    if not isinstance(f.layer, int) or isinstance(f.layer, bool):
        raise ArgumentError("features.layer", f.layer, "an integer index of D's hidden layers (-1: the last)", -1)
    chosen = sorted(cfg.get("logger") or {})
    if chosen and "tensorboard" not in chosen:
        raise ArgumentError(
            "logger",
            ",".join(chosen),
            "tensorboard (the run's own event files are where visualize.py sends its "
            "figures; CSV holds no images, and W&B or MLflow would need the run's id: upload the out folder with "
            "their tools)",
            "tensorboard",
        )


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Write what ``conf/visualize.yaml`` asks for into ``cfg.out``; returns the summary (also summary.json)."""
    from dcgan.tasks.generate import load_model

    _check(cfg)
    begin = time.perf_counter()
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.ckpt_path = str(Path(cfg.ckpt_path).expanduser())
    model = load_model(cfg.ckpt_path, cfg.device, cfg.ema)
    device, nz, seed = model.device, model.generator.nz, cfg.seed
    # without a Trainer the module's global_step reads 0: the checkpoint file has it
    step = int(torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False, mmap=True).get("global_step", -1))
    if model.hparams.get("num_classes"):
        raise DataError(
            "visualize.py reads unconditional DCGANs: a conditional G and D need labels at every step. Fix: give "
            "the checkpoint of an unconditional run."
        )
    if "stack_seed" in cfg.data and not _given("data.stack_seed"):
        with open_dict(cfg):  # Stacked MNIST: the stacks the run trained on, drawn from its own seed
            cfg.data.stack_seed = int(model.hparams.get("seed", cfg.seed))
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    shape = (dm.channels, dm.image_size, dm.image_size)
    g_shape = tuple(model.sample(sampling.noise(1, nz, seed).to(device)).shape[1:])
    if g_shape != shape:
        raise DataError(
            f"data={dm.name} has images of {shape} (C, H, W) but the checkpoint's G draws {g_shape}: give the data "
            "set it was trained on (data=..., data.image_size=..., data.channels=...)."
        )
    figures = Figures(out)
    summary: dict[str, Any] = {"checkpoint": str(cfg.ckpt_path), "global_step": step}
    facts = [f"checkpoint: {cfg.ckpt_path} (global step {step})", f"data: {dm.name}"]
    d = model.discriminator.eval()
    if not callable(getattr(d, "features", None)):
        raise DataError(
            f"{type(d).__name__} has no features(x) (its hidden layers' outputs): visualize.py reads D's hidden "
            "channels. Give the checkpoint of a D that has them, as dcgan.nets.Discriminator."
        )
    if getattr(d, "packing", 1) > 1:
        raise DataError("this D packs images before its hidden channels (PacGAN): it has no per-image features. "
                        "Give the checkpoint of an unpacked D.")  # fmt: skip
    with torch.no_grad():
        hidden = len(d.eval().features(to_unit_range(dm.images_at(torch.arange(1))).to(device)))
    if not -hidden <= cfg.features.layer < hidden:
        raise ArgumentError("features.layer", cfg.features.layer, f"an index of D's {hidden} hidden layers, "
                            f"{-hidden}..{hidden - 1} (-1: the last, the paper's)", -1)  # fmt: skip

    with _stage("D's features: top channels, their most exciting real images, guided backpropagation"):
        f = cfg.features
        drawn = _draw(dm, dm.current_split, f.pool, seed)
        pool = to_unit_range(dm.images_at(drawn)).to(device)
        trained, channels, trained_at = _feature_view(d, pool, f.layer, f.channels, f.images)
        random_d = guided.random_like(lambda: instantiate(model.hparams.discriminator), pool, seed)
        control, random_channels, random_at = _feature_view(random_d, pool, f.layer, f.channels, f.images)
        n = 2 * f.images
        figures.add("d_features_trained.png", sampling.grid_image(trained, nrow=n),
                    f"trained D, hidden layer {f.layer}: for each of its {len(channels)} most active channels "
                    f"({channels}), the {f.images} real images (of {len(pool)}) that excite it most, then the "
                    "guided-backpropagation map of that channel on each")  # fmt: skip
        figures.add("d_features_random.png", sampling.grid_image(control, nrow=n),
                    f"the paper's control: the same architecture with random weights (seed {seed}), the same "
                    f"{len(pool)} real images, its own top channels ({random_channels})")  # fmt: skip
        side = torch.cat([torch.cat([a, b]) for a, b in zip(trained.split(n), control.split(n), strict=True)])
        figures.add("d_features_side_by_side.png", sampling.grid_image(side, nrow=2 * n),
                    "as the paper's Figure 5: each row, the trained D's channel on the left half (its images, then "
                    "their guided maps) and the random D's channel of the same rank on the right half")  # fmt: skip
        if dm.num_classes:
            labels = dm.load_labels()[drawn]
            purity = {"trained": class_purity(trained_at, labels), "random": class_purity(random_at, labels)}
            summary["class_purity"] = purity
            facts.append(
                f"class purity of each channel's {f.images} top images (the share in their most common class, "
                f"mean over channels): trained D {purity['trained']:.2f}, random D {purity['random']:.2f}"
            )

    with _stage("filters"):
        d_filters = guided.first_conv_filters(d)
        figures.add("filters_d.png", sampling.grid_image(_gray_or_rgb(d_filters, d_filters.size(1)), nrow=16),
                    "D's first-layer filters, each scaled to its own range")  # fmt: skip
        sampler = model.generator_ema if model.generator_ema is not None else model.generator  # the G that samples
        g_filters = guided.last_deconv_filters(sampler)
        figures.add("filters_g.png", sampling.grid_image(_gray_or_rgb(g_filters, g_filters.size(1)), nrow=16),
                    "G's last-layer filters (one per input channel of its last transposed convolution)")  # fmt: skip

    with _stage("nearest training images of samples, and the copy rate"):
        nb, cp = cfg.neighbours, cfg.copy_rate
        total = dm.num_images()
        keep = (
            torch.arange(total)
            if total <= nb.train
            else torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: nb.train]
        )
        train = to_unit_range(dm.images_at(keep.sort().values))
        if total > nb.train:
            facts.append(f"neighbours and copy rate among {nb.train} of the {total} training images (neighbours.train)")
        # real images G never saw: the test split, where training used the train split alone (CelebA's split=all
        # and CIFAR-10's contain it); else a random tenth of the training images, kept out of the search
        test_split = "test" if "test" in dm.splits and dm.current_split == "train" else None
        if test_split is None:
            cut = max(len(train) * 9 // 10, 1)
            mixed = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))]
            train, test = mixed[:cut], mixed[cut:][: cp.test]
            facts.append(f"{dm.name} ({dm.current_split}) has no separate test split: a random tenth of its "
                         "training images sets the copy threshold and is not searched, so a copy of one of those "
                         "would go unseen")  # fmt: skip
        else:
            test = _real(dm, test_split, cp.test, seed)
        if nb.k > len(train):
            raise ArgumentError("neighbours.k", nb.k, f"at most the {len(train)} training images searched", 5)
        samples = sampling.noise(max(nb.samples, cp.samples), nz, seed + 1)
        generated = torch.cat(list(sampling.in_batches(model.sample, samples, 500))).float()
        shown = generated[: nb.samples]
        train_rows = neighbours.flat(train).to(device)
        _, idx = neighbours.nearest(neighbours.flat(shown), train_rows, nb.k)
        figures.add("neighbours_pixels.png", sampling.grid_image(_neighbour_grid(shown, train, idx), nrow=nb.k + 1),
                    f"each row: a sample, then its {nb.k} nearest training images by pixel L2 distance "
                    f"(of {len(train)})")  # fmt: skip
        pixel = _copy(neighbours.flat(generated[: cp.samples]), train_rows, neighbours.flat(test), cp.percentile)
        summary["copy_pixels"] = pixel
        facts.append(
            f"copy rate, pixels: {pixel['copy_rate']:.4f} of {cp.samples} samples lie within the "
            f"{_ordinal(cp.percentile)} percentile ({pixel['threshold']:.3f}) of {len(test)} real test images' "
            "distances to their nearest training image (training images themselves: 1; unseen real images: about "
            f"{cp.percentile / 100:g}; noise: 0)"
        )
        heldout = _heldout(cfg, dm, test_split)
        if heldout is not None:
            embed = _embedding(heldout, device)
            train_feats = embed(train).to(device)
            _, idx = neighbours.nearest(embed(shown), train_feats, nb.k)
            figures.add("neighbours_heldout.png",
                        sampling.grid_image(_neighbour_grid(shown, train, idx), nrow=nb.k + 1),
                        f"each row: a sample, then its {nb.k} nearest training images in the held-out scorer's "
                        "feature space")  # fmt: skip

    with _stage("latent walk"):
        w = cfg.walk
        ends = (sampling.noise(w.pairs, nz, seed + 2), sampling.noise(w.pairs, nz, seed + 3))  # sample() moves z
        path = sampling.interpolation(model.sample, *ends, w.steps)
        figures.add("walk.png", sampling.grid_image(path.flatten(0, 1), nrow=w.steps),
                    f"{w.pairs} walks in z (slerp), {w.steps} steps each: smooth changes, no sudden jumps")  # fmt: skip
        if w.gif:
            frames = [sampling.grid_image(path[:, t], nrow=math.ceil(math.sqrt(w.pairs))) for t in range(w.steps)]
            sampling.save_gif(frames, out / "walk.gif")
            figures.captions["walk.gif"] = "the same walks as an animation"

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    page = figures.html(f"What {Path(cfg.ckpt_path).name} learned", facts)
    for name in sorted(cfg.get("logger") or {}):
        if name == "tensorboard":
            _to_tensorboard(Path(cfg.ckpt_path), figures, step)
        else:
            log.info(
                "logger.%s: not sent (visualize.py sends its figures to TensorBoard only; they are in %s)", name, out
            )
    log.info("Index: %s (%d figures) in %.1f s", page, len(figures.captions), time.perf_counter() - begin)
    return summary


def _copy(samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor, percentile: float) -> dict[str, float]:
    """``neighbours.copy_report``, with a progress line per tenth of its two nearest-neighbour searches."""
    what = f"nearest of {len(train)} training images, for {len(test)} real and {len(samples)} generated images"
    with Progress(what, len(test) + len(samples)) as progress:
        return neighbours.copy_report(samples, train, test, percentile, done=progress.advance)


def _given(key: str) -> bool:
    """Whether ``key`` was set on the command line."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)


def _heldout(cfg: DictConfig, dm: Any, test_split: str | None) -> Any:
    """The held-out scorer (trained on the test split), where the data has labels and a test split."""
    setting = cfg.neighbours.heldout
    usable = bool(getattr(dm, "num_classes", None)) and test_split is not None
    if setting == "off" or (setting == "auto" and not usable):
        return None
    if not usable:
        raise DataError(
            f"neighbours.heldout=on: {dm.name} needs class labels and a test split for the held-out scorer. "
            "Fix: neighbours.heldout=auto (pixels only where there is none)."
        )
    from dcgan.metrics.build import Extractors, make_extractors

    cache = Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else None
    how = Extractors(heldout_steps=cfg.neighbours.heldout_steps, cache_dir=cache)
    with _stage("the held-out scorer (trained once on the test split, then cached)"):
        return make_extractors(dm, {"heldout"}, how)["heldout"]


def _embedding(extractor: Any, device: torch.device) -> Any:
    extractor = extractor.to(device)

    def embed(images: torch.Tensor) -> torch.Tensor:
        with Progress(f"held-out scorer features of {len(images)} images", len(images)) as progress:
            rows = []
            for chunk in images.split(500):
                rows.append(extractor(chunk.to(device))["features"].float().cpu())
                progress.advance(len(chunk))
        return torch.cat(rows)

    return embed


def _to_tensorboard(ckpt: Path, figures: Figures, step: int) -> None:
    """Every PNG into the run's own event files (``<run dir>/tensorboard``), under ``visualize/<name>``."""
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.transforms.functional import pil_to_tensor

    ckpt = ckpt.expanduser().resolve()
    if ckpt.parent.name != "checkpoints":
        raise ArgumentError(
            "logger",
            "tensorboard",
            f"a checkpoint inside a run dir (<run dir>/checkpoints/), not {ckpt}, to find the run's TensorBoard",
            "null (the figures are in the out folder)",
        )
    run_dir = ckpt.parent.parent
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    for name in figures.captions:
        if name.endswith(".png"):
            with Image.open(figures.out / name) as im:
                writer.add_image(f"visualize/{Path(name).stem}", pil_to_tensor(im.convert("RGB")), global_step=step)
    writer.close()
    log.info("TensorBoard: the figures are under visualize/ in %s", run_dir / "tensorboard")
