"""Score generated images under named protocols: one extractor pass per image feeds every metric that uses it;
each protocol's value comes from its registered metric (``dcgan.metrics.registry``).

Under DDP each rank generates and extracts its share of the samples (the same z as a single process would
draw for those indices); the outputs are gathered in index order and every rank computes the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dcgan.metrics.extractors import Extractor
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.reference import ReferenceStats
from dcgan.metrics.registry import METRICS
from dcgan.progress import Progress

log = logging.getLogger(__name__)

Sampler = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # (z, labels or None) -> images in [-1, 1]


@dataclass(frozen=True)
class Settings:
    kid_subset_size: int | None = None  # None: min(1000, generated, real)
    kid_subsets: int = 100
    is_splits: int = 10
    batch_size: int = 500
    seed: int = 0  # the z (and classes) of the generated images
    progress: bool = False  # a line per tenth of the images scored (evaluate.py); off: only the time it took


def validate(protocols: list[Protocol], settings: Settings) -> None:
    """Raise ValueError now, before any training, for sizes a protocol cannot be computed with."""
    for p in protocols:
        METRICS[p.metric].check(p, settings)


class QualitySuite:
    """``protocols`` scored with ``extractors`` (by kind) against ``references`` (real statistics by kind and split)."""

    def __init__(
        self,
        protocols: list[Protocol],
        extractors: dict[str, Extractor],
        references: dict[tuple[str, str], ReferenceStats],
        settings: Settings | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings or Settings()
        validate(protocols, self.settings)
        for p in protocols:
            if p.extractor not in extractors:
                raise ValueError(f"{p.name} needs the {p.extractor} feature extractor, which this suite was not given.")
            if p.split and (p.extractor, p.split) not in references:
                raise ValueError(f"{p.name} needs reference statistics of the {p.split} split for {p.extractor}.")
        self.protocols, self.references = protocols, references
        self.device = torch.device(device)
        self.extractors = {
            k: e.to(self.device) for k, e in extractors.items() if any(p.extractor == k for p in protocols)
        }
        self.num_samples = max(p.num_samples for p in protocols)
        self.last_outputs: dict[str, dict[str, torch.Tensor]] = {}  # what the last score() extracted (all ranks')

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.protocols]

    def noise(self, nz: int, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every sample's z (and class, drawn uniformly), from the seed: the same for any world size."""
        gen = torch.Generator().manual_seed(self.settings.seed)
        z = torch.randn(self.num_samples, nz, generator=gen)
        labels = torch.randint(num_classes, (self.num_samples,), generator=gen) if num_classes else None
        return z, labels

    @torch.no_grad()
    def extract(
        self, images: Iterator[torch.Tensor], progress: Progress | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """One pass of each extractor over ``images``: ``{kind: {output: (N, D)}}`` on the CPU."""
        out: dict[str, dict[str, list[torch.Tensor]]] = {k: {} for k in self.extractors}
        for batch in images:
            batch = batch.to(self.device)
            for kind, extractor in self.extractors.items():
                for name, value in extractor(batch).items():
                    out[kind].setdefault(name, []).append(value.float().cpu())
            if progress is not None:
                progress.advance(len(batch))
        return {k: {n: torch.cat(v) for n, v in outputs.items()} for k, outputs in out.items()}

    def score(self, sample: Sampler, nz: int, num_classes: int | None = None) -> dict[str, float]:
        """Generate ``num_samples`` images with ``sample`` (this rank's share under DDP) and score them."""
        z, labels = self.noise(nz, num_classes)
        rank, world = _rank_world()
        lo, hi = rank * len(z) // world, (rank + 1) * len(z) // world
        step = self.settings.batch_size

        def mine() -> Iterator[torch.Tensor]:
            for start in range(lo, hi, step):
                end = min(start + step, hi)
                yield sample(z[start:end], None if labels is None else labels[start:end])

        what = f"generating {hi - lo} images and extracting their features ({', '.join(self.extractors)})"
        with Progress(what, hi - lo, enabled=self.settings.progress) as progress:
            outputs = self.extract(mine(), progress)
        if world > 1:
            outputs = {k: {n: _gather_rows(v, len(z)) for n, v in o.items()} for k, o in outputs.items()}
        self.last_outputs = outputs
        return self.compute(outputs, labels)

    def compute(self, outputs: dict[str, dict[str, torch.Tensor]], labels: torch.Tensor | None) -> dict[str, float]:
        """The protocols' values from extracted outputs of the generated images (in sample order)."""
        results: dict[str, float] = {}
        for p in self.protocols:
            metric = METRICS[p.metric]
            if metric.conditional_only and labels is None:
                continue
            value = outputs[p.extractor][p.output][: p.num_samples]
            reference = self.references[(p.extractor, p.split)] if p.split else None
            given = None if labels is None else labels[: p.num_samples]
            computed = metric.compute(value, reference, given, self.settings)
            if not isinstance(computed, dict):
                computed = {"": computed}
            results.update({f"{p.name}{suffix}": float(v) for suffix, v in computed.items()})
        return results


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """All ranks' rows in rank order (rank r holds rows [r*total//W, (r+1)*total//W)), on every rank."""
    _, world = _rank_world()
    sizes = [(r + 1) * total // world - r * total // world for r in range(world)]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(max(sizes), *local.shape[1:], dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)]).cpu()
