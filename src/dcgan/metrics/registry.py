"""Metrics register themselves by name, as StyleGAN2-ADA's ``metric_main``: what they read, what they compare
with, and their maths. Protocol names, the suite, reference statistics and protocol selection read ``METRICS``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from dcgan.errors import ArgumentError

if TYPE_CHECKING:
    from dcgan.metrics.protocols import Protocol
    from dcgan.metrics.reference import ReferenceStats
    from dcgan.metrics.suite import Settings

# extractor kind -> the outputs one forward gives (dcgan.metrics.extractors)
EXTRACTOR_OUTPUTS: dict[str, tuple[str, ...]] = {
    "inception": ("pool", "logits"),  # torch-fidelity's TF-Inception: pool3 (2048-d), unbiased logits
    "classifier": ("features", "logits"),  # DigitClassifier, trained on the training split
    "heldout": ("features", "logits"),  # HeldOutClassifier, trained on the test split
}
_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)*$")  # no digits: the count follows the name (cfid1k_test)


class Metric:
    """One quality metric. Set the class attributes and write ``compute``; ``@register_metric`` (or a
    ``callbacks.quality.extra`` / ``quality.extra`` config node) makes it scoreable as ``<name><count>[_<split>]``."""

    name: str = ""  # the protocol's prefix: cfid -> cfid1k_test
    extractor: str = ""  # inception | classifier | heldout
    output: str = ""  # inception: pool | logits; classifier, heldout: features | logits
    reference: bool = False  # compares with the real images of a split: the name carries the split
    split: str | None = None  # a fixed reference split, whatever the run's reference is (hfid: test)
    reference_features: bool = False  # needs the real features themselves, not only their mean and covariance
    conditional_only: bool = False  # needs the classes G was asked for (skipped without them)
    default: bool = False  # scored whenever its extractor is on; otherwise only when named in ``extra``

    def check(self, protocol: Protocol, settings: Settings, num_real: int | None = None) -> None:
        """Raise ValueError for sizes ``protocol`` cannot be computed with (``num_real``: once it is known), or for
        another split than a fixed ``split``. Overrides call it first."""
        if self.split and protocol.split != self.split:
            raise ValueError(
                f"{protocol.name}: the {self.extractor} scorer is trained on the {self.split} split; use "
                f"{self.name}{protocol.count}_{self.split}."
            )

    def compute(
        self,
        values: torch.Tensor,
        reference: ReferenceStats | None,
        labels: torch.Tensor | None,
        settings: Settings,
    ) -> float | dict[str, float]:
        """The value from the generated images' ``output`` (N, D), the real ``reference`` statistics (when
        ``reference``) and the N classes asked for (conditional G, else None). A dict maps a suffix of the
        protocol's name to a value: ``{"": mean, "_std": std}`` logs ``kid1k_test`` and ``kid1k_test_std``."""
        raise NotImplementedError(f"{type(self).__name__}.compute")


METRICS: dict[str, Metric] = {}  # name -> the registered instance, in registration order
M = TypeVar("M", bound=type[Metric] | Metric)


def _qualname(obj: type | object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def register_metric(metric: M) -> M:
    """Register a ``Metric`` subclass (an instance of it, made with no arguments) or an instance; returns it.

    A class decorator. Registering the same class again (a second run in one process) replaces the instance;
    another class under a registered name is refused.
    """
    instance = metric() if isinstance(metric, type) and issubclass(metric, Metric) else metric
    if not isinstance(instance, Metric):
        raise TypeError(f"register_metric({metric!r}): expected a subclass of dcgan.metrics.Metric or an instance.")
    where = _qualname(metric)
    name, kind, output = instance.name, instance.extractor, instance.output
    if not _NAME.match(name):
        raise ValueError(f"{where}.name={name!r}: expected lower-case words joined by _ (no digits), e.g. 'sharpness'.")
    if kind not in EXTRACTOR_OUTPUTS:
        raise ValueError(f"{where}.extractor={kind!r}: expected one of {', '.join(EXTRACTOR_OUTPUTS)}.")
    if output not in EXTRACTOR_OUTPUTS[kind]:
        raise ValueError(f"{where}.output={output!r}: the {kind} extractor gives {', '.join(EXTRACTOR_OUTPUTS[kind])}.")
    if instance.split and not instance.reference:
        raise ValueError(f"{where}.split={instance.split!r}: a fixed split needs reference = True.")
    taken = METRICS.get(name)
    if taken is not None and _qualname(taken) != where:
        raise ValueError(f"metric name {name!r} is taken by {_qualname(taken)}: give {where} another name.")
    METRICS[name] = instance
    return metric


def register_extra(nodes: Mapping[str, Any] | None) -> list[str]:
    """The metrics of a config's ``extra``, ``{label: a registered metric's name, a Metric, its class or a _target_
    node}``, registered; returns their names, in order (``{recall: hrecall, mine: {_target_: my.Metric}}``)."""
    names = []
    for key, node in (nodes or {}).items():
        if isinstance(node, str):
            if node not in METRICS:
                raise ArgumentError(f"extra.{key}", node, f"a registered metric ({', '.join(METRICS)}) or a node")
            names.append(node)
            continue
        if isinstance(node, Mapping) and "_target_" in node:
            from hydra.utils import instantiate

            node = instantiate(node)
        if not (isinstance(node, Metric) or (isinstance(node, type) and issubclass(node, Metric))):
            raise ArgumentError(f"extra.{key}", node, "a node whose _target_ names a dcgan.metrics.Metric subclass")
        register_metric(node)
        names.append(node.name)
    return names
