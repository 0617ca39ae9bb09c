"""Reference statistics of real images: computed once per data set, split, resolution, extractor and N, cached.

The cache file is an ``.npz`` with ``mu`` and ``sigma`` per extractor output (``mu_pool``, ``sigma_pool``, ...)
and, when KID needs them, the features themselves. ``save_stats``/``load_stats`` read and write the plain
``mu``/``sigma`` layout that pytorch-fid and clean-fid use, so published statistics can be scored against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcgan.metrics.maths import feature_stats

log = logging.getLogger(__name__)


@dataclass
class ReferenceStats:
    """``stats[output] = (mu, sigma)``; ``features[output]`` when a kernel metric (KID) needs the samples."""

    num_images: int
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def to_npz(self, path: Path) -> None:
        arrays = {"num_images": np.array(self.num_images)}
        for name, (mu, sigma) in self.stats.items():
            arrays[f"mu_{name}"], arrays[f"sigma_{name}"] = mu, sigma
        for name, feats in self.features.items():
            arrays[f"features_{name}"] = feats
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: sweep jobs and DDP ranks share the cache

    @classmethod
    def from_npz(cls, path: Path) -> ReferenceStats:
        with np.load(path) as data:
            ref = cls(int(data["num_images"]))
            for key in data.files:
                if key.startswith("mu_"):
                    name = key[3:]
                    ref.stats[name] = (data[key], data[f"sigma_{name}"])
                elif key.startswith("features_"):
                    ref.features[key[9:]] = data[key]
        return ref


def reference_key(data_identity: object, split: str, extractor_digest: str, num_images: int, seed: int) -> str:
    """A digest of everything the statistics depend on; ``data_identity`` covers the files and decode settings."""
    blob = json.dumps([data_identity, split, extractor_digest, num_images, seed], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def compute_reference(
    batches: Iterator[torch.Tensor],
    extract: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    keep_features: set[str],
    done: Callable[[int], None] | None = None,
) -> ReferenceStats:
    """Statistics of every output of ``extract`` over ``batches`` (float images in [-1, 1]); ``done(n)`` after each
    batch of ``n`` images (progress)."""
    outputs: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for name, value in extract(batch).items():
            outputs.setdefault(name, []).append(value.float().cpu())
        if done is not None:
            done(len(batch))
    if not outputs:
        raise ValueError("No real images to compute reference statistics from.")
    ref = ReferenceStats(num_images=sum(len(v) for v in next(iter(outputs.values()))))
    for name, chunks in outputs.items():
        feats = torch.cat(chunks)
        ref.stats[name] = feature_stats(feats)
        if name in keep_features:
            ref.features[name] = feats.numpy()
    return ref


def cached_reference(
    path: Path | None, build: Callable[[], ReferenceStats], need_features: set[str]
) -> tuple[ReferenceStats, bool]:
    """The statistics at ``path`` if there (with the features needed), else ``build()`` and store them.

    Returns them and whether they came from the cache.
    """
    if path is not None and path.is_file():
        ref = ReferenceStats.from_npz(path)
        if need_features <= set(ref.features):
            return ref, True
    ref = build()
    if path is not None:
        ref.to_npz(path)
        log.info("Reference statistics cached at %s", path)
    return ref, False


def save_stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu``/``sigma`` as pytorch-fid's and clean-fid's ``.npz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma)


def load_stats(path: Path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``mu``/``sigma`` from a pytorch-fid/clean-fid ``.npz``; ``dim`` checks they fit the extractor."""
    if not path.is_file():
        raise FileNotFoundError(f"stats file {path}: no such file. Write one with evaluate.py stats.write={path}.")
    with np.load(path) as data:
        if "mu" not in data.files or "sigma" not in data.files:
            raise ValueError(f"{path} holds {data.files}: expected arrays 'mu' and 'sigma' (pytorch-fid's layout).")
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if dim is not None and (mu.shape != (dim,) or sigma.shape != (dim, dim)):
        raise ValueError(
            f"{path}: mu {mu.shape}, sigma {sigma.shape}; this extractor gives {dim}-d features. Use statistics "
            "made with the same network and layer (Inception pool3: 2048)."
        )
    return mu, sigma
