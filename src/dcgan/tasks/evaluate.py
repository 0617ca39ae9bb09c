"""``evaluate.py``: score a checkpoint, every checkpoint of a run, or images made by any tool, under named protocols."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from dcgan.analysis.probe import linear_probe
from dcgan.data.base import DataError, to_unit_range
from dcgan.errors import ArgumentError
from dcgan.metrics.build import Extractors, build_suite, check_data
from dcgan.metrics.extractors import inception_weights
from dcgan.metrics.library import ModeMetric, frechet_metric
from dcgan.metrics.maths import mode_histogram, modes_and_kl
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.reference import ReferenceStats, load_stats, save_stats
from dcgan.metrics.registry import METRICS, register_extra
from dcgan.metrics.select import available_protocols, check_modes
from dcgan.metrics.suite import QualitySuite, Settings
from dcgan.progress import Progress

log = logging.getLogger("dcgan")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_images(path: Path, limit: int | None = None, channels: int = 3) -> torch.Tensor:
    """uint8 (N, C, H, W) from a folder of image files (sorted by name; converted to ``channels``, as the
    data sets are) or from an ``.npz`` holding a uint8 (N, H, W, C) array."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            key = "images" if "images" in data.files else data.files[0]
            array = data[key]
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
            raise DataError(
                f"images={path}: array {key!r} is {array.dtype} {array.shape}; expected uint8 (N, H, W, C) with C 1 "
                "or 3, as generate.py npz=true, clean-fid and StudioGAN write."
            )
        images = torch.from_numpy(array[:limit]).permute(0, 3, 1, 2).contiguous()
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise DataError(f"images={path}: no {', '.join(IMAGE_SUFFIXES)} files in that folder.")
        mode = "L" if channels == 1 else "RGB"  # palette, 16-bit and RGBA files as well
        pixels = []
        for f in files:
            with Image.open(f) as im:
                pixels.append(np.asarray(im.convert(mode)))
        if len({p.shape for p in pixels}) > 1:
            raise DataError(f"images={path}: the images differ in size or mode; expected one size and mode for all.")
        array = np.stack(pixels)
        images = torch.from_numpy(array[..., None] if array.ndim == 3 else array).permute(0, 3, 1, 2).contiguous()
    else:
        raise DataError(f"images={path}: no such folder or .npz file.")
    if images.size(1) == 4:
        images = images[:, :3]
    return images


def _protocols(cfg: DictConfig, dm: Any, num_samples: int) -> list[Protocol]:
    q = cfg.quality
    try:
        modes = check_modes(classifier=q.classifier, inception=q.inception, heldout=q.heldout)
        extra = register_extra(q.get("extra"))
        protocols = available_protocols(dm, modes, num_samples, cfg.reference, q.inception_weights, extra)
    except ArgumentError as err:
        raise err.at("quality") from None
    if not protocols:
        raise DataError(
            f"No quality metric can score {dm.name}: it has no labels and no Inception weights are set. Set "
            "quality.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth (or DCGAN_INCEPTION_WEIGHTS)."
        )
    check_data(dm, protocols)
    return protocols


def _read_stats(cfg: DictConfig, suite: QualitySuite, num_samples: int) -> None:
    """Add ``<fid>N_stats``: the Frechet distance against statistics read from ``stats.read``."""
    kind = cfg.stats.extractor
    if kind not in suite.extractors:
        raise DataError(f"stats.extractor={kind}: this evaluation has no {kind} features ({sorted(suite.extractors)}).")
    frechet = frechet_metric(kind)
    dim = next(ref.stats[frechet.output][0].shape[0] for (k, _), ref in suite.references.items() if k == kind)
    mu, sigma = load_stats(Path(cfg.stats.read).expanduser(), dim=dim)
    suite.references[(kind, "stats")] = ReferenceStats(num_images=0, stats={frechet.output: (mu, sigma)})
    suite.protocols.append(Protocol(frechet.name, num_samples, "stats"))


def _write_stats(cfg: DictConfig, suite: QualitySuite) -> Path:
    kind, split = cfg.stats.extractor, cfg.reference
    ref = suite.references.get((kind, split))
    if ref is None:
        have = sorted(suite.references)
        raise DataError(
            f"stats.write: no {kind} reference statistics of the {split} split in this evaluation ({have})."
        )
    path = Path(cfg.stats.write).expanduser()
    save_stats(path, *ref.stats[frechet_metric(kind).output])
    log.info("Reference statistics (%s, %s split, %d images): %s", kind, split, ref.num_images, path)
    return path


def _by_step(paths: list[Path]) -> dict[int, list[Path]]:
    """The checkpoints grouped by the global step they hold, in step order: a run's last.ckpt, its last step*.ckpt
    and a best-*.ckpt of that step hold the same weights, scored once. Periodic files come first in a group."""
    groups: dict[int, list[Path]] = {}
    unknown = 0
    for path in paths:
        step = int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("global_step", -1))
        if step < 0:  # no step recorded: nothing says two such files hold the same weights
            unknown -= 1
            step = unknown
        groups.setdefault(step, []).append(path)

    def order(p: Path) -> tuple[bool, bool, str]:
        return p.name == "last.ckpt", p.name.startswith("best"), p.name

    return {s: sorted(files, key=order) for s, files in sorted(groups.items())}


def _checkpoints(path: Path) -> list[Path]:
    """A checkpoint file, or every ``.ckpt`` of a run dir (``<dir>/checkpoints/`` or ``<dir>`` itself)."""
    if path.is_file():
        return [path]
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"ckpt_path={path}: no such checkpoint, and no .ckpt files in {folder}. Give a .ckpt file or a run dir."
        )
    return found


def evaluate(cfg: DictConfig, out: Path | None = None) -> dict[str, Any]:
    """Score what ``conf/evaluate.yaml`` names; prints a table and, into ``out`` (Hydra's run dir by default),
    writes ``evaluation.json`` and, for a run's checkpoints, ``quality_vs_step.png``."""
    from dcgan.tasks.generate import load_model

    begin = time.perf_counter()
    if (cfg.get("ckpt_path") is None) == (cfg.get("images") is None):
        raise DataError("evaluate.py needs exactly one of ckpt_path=<.ckpt or run dir> and images=<folder or .npz>.")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    images = None
    if cfg.get("images"):
        images = load_images(Path(cfg.images).expanduser(), cfg.num_samples, dm.channels)
    num_samples = len(images) if images is not None else cfg.num_samples
    if images is not None and tuple(images.shape[1:]) != (dm.channels, dm.image_size, dm.image_size):
        raise DataError(
            f"images={cfg.images}: {tuple(images.shape[1:])} (C, H, W), but data={dm.name} is "
            f"{(dm.channels, dm.image_size, dm.image_size)}. Set data.image_size/data.channels to match the images."
        )
    protocols = _protocols(cfg, dm, num_samples)
    device = _device(cfg.device)
    how = Extractors(
        inception_weights=inception_weights(cfg.quality.inception_weights),
        classifier_steps=cfg.quality.classifier_steps,
        heldout_steps=cfg.quality.heldout_steps,
        cache_dir=Path(cfg.paths.cache_dir).expanduser() if cfg.paths.cache_dir else None,
    )
    settings = Settings(
        kid_subset_size=cfg.quality.kid_subset_size, batch_size=cfg.batch_size, seed=cfg.seed, progress=True
    )
    suite = build_suite(dm, protocols, how, settings, device)
    report: dict[str, Any] = {"num_samples": num_samples}
    if cfg.stats.write:
        report["stats_written"] = str(_write_stats(cfg, suite))
    if cfg.stats.read:
        _read_stats(cfg, suite, num_samples)
    report["protocols"] = [p.name for p in suite.protocols]
    if out is None and HydraConfig.initialized():
        out = Path(HydraConfig.get().runtime.output_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    if images is not None:
        report["images"] = str(Path(cfg.images).resolve())
        batches = (to_unit_range(chunk) for chunk in images.split(cfg.batch_size))
        with Progress(f"extracting the features of {len(images)} images", len(images)) as progress:
            suite.last_outputs = suite.extract(batches, progress)
        report["quality"] = suite.compute(suite.last_outputs, None)
        _print(report["images"], report["quality"], num_samples)
        if out is not None:
            report.update({k: str(v) for k, v in _plot_modes(suite, out).items()})
    else:
        rows = []
        by_step = _by_step(_checkpoints(Path(cfg.ckpt_path).expanduser()))
        with Progress("scoring checkpoints", len(by_step), unit="checkpoints", enabled=len(by_step) > 1) as progress:
            for key, files in by_step.items():
                step = max(key, -1)  # a file without a recorded step reads -1 (its group key is its own)
                path = files[0]
                model = load_model(str(path), cfg.device, cfg.ema)
                quality = suite.score(model.sample, model.generator.nz, model.hparams.get("num_classes") or None)
                rows.append({"ckpt_path": str(path.resolve()), "global_step": step, "quality": quality})
                if len(files) > 1:  # one step's weights in several files (last.ckpt, step*.ckpt, best-*.ckpt)
                    rows[-1]["same_weights"] = [str(f.resolve()) for f in files]
                held = f"step {step}" if step >= 0 else "step not recorded"
                _print(f"{' = '.join(str(f) for f in files)} ({held})", quality, num_samples)
                if out is not None:
                    prefix = f"{path.stem}_" if len(by_step) > 1 else ""
                    rows[-1].update({k: str(v) for k, v in _plot_modes(suite, out, prefix).items()})
                progress.advance()
        rows.sort(key=lambda r: r["global_step"])
        if len(rows) == 1:
            report.update(rows[0])
            packing = getattr(model.discriminator, "packing", 1)
            if cfg.probe.enabled and getattr(dm, "num_classes", None) and packing > 1:
                report["probe"] = f"skipped: D scores packs of {packing} images; the probe needs per-image features"
                print(f"probe: {report['probe']}")
            elif cfg.probe.enabled and getattr(dm, "num_classes", None):
                probe = linear_probe(
                    model.discriminator, dm.images, dm.load_labels(), cfg.probe.train_size, cfg.probe.test_size,
                    C=cfg.probe.C, seed=cfg.seed,
                )  # fmt: skip
                report["probe"] = vars(probe)
                print(f"probe/accuracy  {probe.accuracy:.4f} (chance {probe.chance:.4f}, {probe.num_features} D "
                      f"features, {probe.train_size} train / {probe.test_size} test)")  # fmt: skip
        else:
            report["checkpoints"] = rows
            _print_run(rows)
            if out is not None:
                report["plot"] = str(_plot(rows, out / "quality_vs_step.png"))
    if out is not None:
        (out / "evaluation.json").write_text(json.dumps(report, indent=2))
        print(f"JSON: {out / 'evaluation.json'}")
    log.info("evaluate.py: done in %.1f s", time.perf_counter() - begin)
    return report


def _device(name: str) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def _print(what: str, quality: dict[str, float], num_samples: int) -> None:
    width = max(map(len, quality), default=0)
    table = "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in quality.items())
    print(f"{what} ({num_samples} images)\n{table}")


def _print_run(rows: list[dict[str, Any]]) -> None:
    names = [k for k in rows[0]["quality"] if not k.endswith("_std")]
    print("\n| step | " + " | ".join(names) + " | checkpoint |\n|---|" + "---|" * (len(names) + 1))
    for r in rows:
        cells = " | ".join(f"{r['quality'][n]:.4f}" for n in names)
        files = " = ".join(Path(f).name for f in r.get("same_weights", [r["ckpt_path"]]))
        print(f"| {r['global_step']} | {cells} | {files} |")


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in rows[0]["quality"] if not k.endswith("_std")]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    steps = [r["global_step"] for r in rows]
    for ax, name in zip(axes[0], names, strict=True):
        values = [r["quality"][name] for r in rows]
        ax.plot(steps, values, marker="o")
        log_scale = "fid" in name and all(v > 0 for v in values) and max(values) > 10 * max(min(values), 1e-9)
        ax.set(xlabel="global step", title=name, yscale="log" if log_scale else "linear")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_modes(suite: QualitySuite, out: Path, prefix: str = "") -> dict[str, Path]:
    """For each mode-count protocol scored (``modes26k``): the histogram of samples per mode, every mode a bar,
    sorted from most to least visited, written as ``<prefix>histogram_<protocol>.png``; returns
    ``{"histogram_<protocol>": path}`` (the keys ``evaluation.json`` holds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    for p in suite.protocols:
        metric = METRICS[p.metric]
        if not isinstance(metric, ModeMetric) or metric.kl or p.extractor not in suite.last_outputs:
            continue
        logits = suite.last_outputs[p.extractor][metric.output][: p.num_samples]
        counts = mode_histogram(logits).sort(descending=True).values.numpy()
        modes, kl = modes_and_kl(logits)
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
        ax.axhline(len(logits) / len(counts), color="tab:red", lw=1, label=f"uniform ({len(logits) / len(counts):.0f})")
        ax.set(
            xlabel=f"mode, most to least visited (of {len(counts)})", ylabel="samples", xlim=(-0.5, len(counts) - 0.5),
            title=f"{p.name}: {modes} modes visited, KL {kl:.3f} nats ({p.extractor} scorer, {len(logits)} samples)",
        )  # fmt: skip
        ax.legend(loc="upper right")
        fig.tight_layout()
        path = out / f"{prefix}histogram_{p.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[f"histogram_{p.name}"] = path
    return written
