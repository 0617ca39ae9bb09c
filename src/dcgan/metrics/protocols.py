"""Metric names that carry their protocol, as StyleGAN's ``fid50k_full``: ``<metric><generated images>_<split>``.

``fid10k_test`` is the Inception FID of 10,000 generated images against the test split (all of it, or
10,000 of its images when it has more, drawn with a fixed seed). Metrics that compare with no real images
(``is``, ``class_balance``, ``class_acc``) have no split: ``is50k``. The metric names are those registered in
``dcgan.metrics.registry.METRICS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dcgan.metrics.registry import METRICS

_NAME = re.compile(r"^(?P<metric>[a-z_]+?)(?P<count>\d+(?:\.\d+)?k|\d+)(?:_(?P<split>[a-z]+))?$")


def count_label(n: int) -> str:
    """1000 -> '1k', 2500 -> '2.5k', 50000 -> '50k', 200 -> '200'."""
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


@dataclass(frozen=True)
class Protocol:
    metric: str
    num_samples: int
    split: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r}: expected one of {', '.join(METRICS)}.")
        if self.num_samples < 2:
            raise ValueError(f"{self.metric} with {self.num_samples} samples: expected at least 2 generated images.")
        needs_split = METRICS[self.metric].reference
        if needs_split and not self.split:
            raise ValueError(f"{self.metric} compares with real images: name a split, e.g. {self.metric}10k_test.")
        if not needs_split and self.split:
            raise ValueError(f"{self.metric} uses no real images: drop the split ({self.metric}{self.count}).")

    @property
    def count(self) -> str:
        return count_label(self.num_samples)

    @property
    def name(self) -> str:
        return f"{self.metric}{self.count}" + (f"_{self.split}" if self.split else "")

    @property
    def extractor(self) -> str:
        return METRICS[self.metric].extractor

    @property
    def output(self) -> str:
        return METRICS[self.metric].output

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Protocol:
        """``'fid50k_train'`` -> Protocol('fid', 50000, 'train')."""
        match = _NAME.match(name.removeprefix("val/"))
        if not match or match["metric"] not in METRICS:
            raise ValueError(
                f"metric protocol {name!r}: expected <metric><count>[_<split>] with metric one of "
                f"{', '.join(METRICS)}, e.g. fid50k_train, kid10k_test, is50k, hfid10k_test."
            )
        count = match["count"]
        n = round(float(count[:-1]) * 1000) if count.endswith("k") else int(count)
        return cls(match["metric"], n, match["split"])


def protocols_for(metrics: list[str], num_samples: int, split: str) -> list[Protocol]:
    """One protocol per metric name, with ``num_samples`` generated images, against ``split`` where it compares
    (or the metric's own fixed split: ``hfid`` against test)."""
    return [Protocol(m, num_samples, _split(m, split)) for m in metrics]


def _split(metric: str, split: str) -> str | None:
    known = METRICS.get(metric)
    if known is None or not known.reference:
        return None  # Protocol says what is wrong with an unknown name
    return known.split or split


def monitor_key(metric: str, num_samples: int, split: str) -> str:
    """The logged key of a protocol, e.g. ``val/cfid1k_test``: the best-checkpoint monitor and Optuna use it."""
    return f"val/{protocols_for([metric], int(num_samples), str(split))[0].name}"
