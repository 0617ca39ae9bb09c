"""The shipped metrics, each registered once: the classifier FID, class balance and accuracy on the offline
classifier; FID (Heusel et al. 2017), KID (Binkowski et al. 2018), IS (Salimans et al. 2016) on Inception; the
held-out FID; Stacked MNIST's mode count and KL; improved precision and recall (Kynkaanniemi et al. 2019) and
density and coverage (Naeem et al. 2020) on every extractor. Registration order is the order of the logged keys."""

from __future__ import annotations

import torch

from dcgan.metrics.manifold import manifold_scores
from dcgan.metrics.maths import (
    class_balance,
    feature_stats,
    frechet_distance,
    inception_score,
    kernel_distance,
    modes_and_kl,
)
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.reference import ReferenceStats
from dcgan.metrics.registry import METRICS, Metric, register_metric
from dcgan.metrics.suite import Settings


class Frechet(Metric):
    """The Frechet distance between Gaussians fitted to the generated and the real features."""

    reference = True
    default = True

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> float:
        mu, sigma = reference.stats[self.output]
        return frechet_distance(*feature_stats(values), mu, sigma)


@register_metric
class ClassifierFID(Frechet):
    name, extractor, output = "cfid", "classifier", "features"  # the training-time classifier's 128-d layer


@register_metric
class ClassBalance(Metric):
    """exp(entropy of the predicted-class histogram) / classes: 1 when samples spread evenly, 1/K for one class."""

    name, extractor, output = "class_balance", "classifier", "logits"
    default = True

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> float:
        return class_balance(values, values.size(1))


@register_metric
class ClassAccuracy(Metric):
    """Conditional G: how often the classifier sees the class asked for."""

    name, extractor, output = "class_acc", "classifier", "logits"
    conditional_only = default = True

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> float:
        return (values.argmax(1) == labels).float().mean().item()


@register_metric
class FID(Frechet):
    name, extractor, output = "fid", "inception", "pool"  # torch-fidelity's TF-Inception port, pool3 (2048-d)


@register_metric
class KID(Metric):
    """Cubic-kernel MMD^2 over ``settings.kid_subsets`` subsets of min(1000, images): mean and ``_std``."""

    name, extractor, output = "kid", "inception", "pool"
    reference = reference_features = default = True

    def check(self, protocol: Protocol, settings: Settings, num_real: int | None = None) -> None:
        size = settings.kid_subset_size
        if size is not None and size > protocol.num_samples:
            raise ValueError(
                f"{protocol.name}: KID subset size {size} > {protocol.num_samples} generated images. "
                f"Set kid_subset_size <= {protocol.num_samples} (or null: min(1000, images)), or score more images."
            )
        if size is not None and num_real is not None and size > num_real:
            raise ValueError(
                f"KID subset size {size} > the {num_real} real images of the {protocol.split} split: "
                f"set kid_subset_size <= {num_real} (or null)."
            )

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> dict[str, float]:
        real = reference.features[self.output]
        size = settings.kid_subset_size or min(1000, len(values), len(real))
        mean, std = kernel_distance(real, values, settings.kid_subsets, size)
        return {"": mean, "_std": std}


@register_metric
class InceptionScore(Metric):
    """exp(E KL(p(y|x) || p(y))) over ``settings.is_splits`` splits: mean and ``_std``."""

    name, extractor, output = "is", "inception", "logits"
    default = True

    def check(self, protocol: Protocol, settings: Settings, num_real: int | None = None) -> None:
        if protocol.num_samples < settings.is_splits:
            raise ValueError(
                f"{protocol.name}: the Inception score splits {protocol.num_samples} images into "
                f"{settings.is_splits}; score at least {settings.is_splits} images."
            )

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> dict[str, float]:
        mean, std = inception_score(values, settings.is_splits)
        return {"": mean, "_std": std}


@register_metric
class HeldOutFID(Frechet):
    name, extractor, output = "hfid", "heldout", "features"  # the held-out scorer, trained on the test split only
    split = "test"


class ModeMetric(Metric):
    """Modes with at least one sample (``modes``), or KL(mode histogram || uniform) in nats (``kl``), of the
    classifier's argmax over its classes: 1,000 modes on Stacked MNIST (PacGAN's protocol: ``modes26k``)."""

    output = "logits"
    kl = False

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> float:
        modes, kl = modes_and_kl(values)
        return kl if self.kl else float(modes)


@register_metric
class Modes(ModeMetric):
    name, extractor = "modes", "heldout"  # claims: the held-out scorer


@register_metric
class ModesKL(ModeMetric):
    name, extractor, kl = "kl", "heldout", True


@register_metric
class ClassifierModes(ModeMetric):
    name, extractor = "cmodes", "classifier"  # the training-time monitor


@register_metric
class ClassifierModesKL(ModeMetric):
    name, extractor, kl = "ckl", "classifier", True


class Manifold(Metric):
    """One of precision, recall (k = 3), density, coverage (k = 5) of the generated features against the real
    ones (``dcgan.metrics.manifold``); the four share one nearest-neighbour pass per scoring."""

    reference = reference_features = True
    score = ""

    def check(self, protocol: Protocol, settings: Settings, num_real: int | None = None) -> None:
        super().check(protocol, settings, num_real)
        if min(protocol.num_samples, num_real or protocol.num_samples) < 6:
            raise ValueError(f"{protocol.name}: the 5 nearest neighbours of each image need at least 6 images.")

    def compute(
        self, values: torch.Tensor, reference: ReferenceStats | None, labels: torch.Tensor | None, settings: Settings
    ) -> float:
        return manifold_scores(reference.features[self.output], values)[self.score]


def _register_manifold(kind: str, prefix: str, output: str, split: str | None) -> None:
    """precision, recall, density, coverage on ``kind``'s ``output``, named ``<prefix><score>`` (as fid/cfid/hfid)."""
    for score in ("precision", "recall", "density", "coverage"):
        attributes = {"name": prefix + score, "extractor": kind, "output": output, "split": split, "score": score}
        register_metric(type(f"{kind.title()}{score.title()}", (Manifold,), attributes))


_register_manifold("inception", "", "pool", None)  # precision10k_test: Inception pool3
_register_manifold("classifier", "c", "features", None)  # cprecision: the training-time classifier
_register_manifold("heldout", "h", "features", "test")  # hprecision10k_test: the held-out scorer, its test split


def frechet_metric(kind: str) -> Metric:
    """The registered Frechet distance on ``kind``'s features (``fid``, ``cfid``, ``hfid``): ``stats.read/write``."""
    found = [m for m in METRICS.values() if isinstance(m, Frechet) and m.extractor == kind]
    if not found:
        raise ValueError(f"no Frechet metric on {kind} features; expected one of inception, classifier, heldout.")
    return found[0]
