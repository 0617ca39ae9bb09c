"""Which protocols a run scores: the registered metrics whose extractor is on and has what it needs for the data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dcgan.errors import ArgumentError
from dcgan.metrics.extractors import inception_weights, missing_inception_message
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.registry import EXTRACTOR_OUTPUTS, METRICS

MODES = ("auto", "on", "off")  # per extractor: use it when its inputs exist | they must exist | never


def check_modes(**modes: Any) -> dict[str, str]:
    """Each extractor's mode (``classifier=, inception=, heldout=``) as auto/on/off; YAML reads a bare on as True."""
    checked = {}
    for kind in EXTRACTOR_OUTPUTS:
        value = modes.pop(kind, "off")
        if isinstance(value, bool):
            value = "on" if value else "off"
        if value not in MODES:
            raise ArgumentError(kind, repr(value), f"one of {', '.join(MODES)}", "auto")
        checked[kind] = value
    if modes:
        raise TypeError(f"check_modes: no extractor {', '.join(modes)}; expected {', '.join(EXTRACTOR_OUTPUTS)}.")
    return checked


def chosen_protocols(
    modes: Mapping[str, str], num_samples: int, reference: str, extra: Iterable[str] = (), conditional: bool = True
) -> list[Protocol]:
    """What ``modes`` and ``extra`` ask for, whatever the data: every ``default`` metric, then the ``extra`` ones
    (in their order), whose extractor is not off; ``conditional_only`` ones only for a ``conditional`` G."""
    unknown = [name for name in extra if name not in METRICS]
    if unknown:
        raise ValueError(f"metrics {unknown} are not registered: expected names from {', '.join(METRICS)}.")
    names = [m.name for m in METRICS.values() if m.default]
    names += [n for n in dict.fromkeys(extra) if n not in names]
    protocols = []
    for name in names:
        metric = METRICS[name]
        if modes.get(metric.extractor, "off") == "off" or (metric.conditional_only and not conditional):
            continue
        split = (metric.split or reference) if metric.reference else None
        protocols.append(Protocol(name, num_samples, split))
    return protocols


def available_protocols(
    datamodule: Any,
    modes: Mapping[str, str],
    num_samples: int,
    reference: str,
    inception_path: str | None = None,
    extra: Iterable[str] = (),
    conditional: bool = True,
) -> list[Protocol]:
    """The protocols a run on ``datamodule`` scores: ``chosen_protocols`` whose extractor has its inputs (labels
    for the classifiers, a test split for the held-out scorer, the Inception weights file at ``inception_path``
    or ``$DCGAN_INCEPTION_WEIGHTS``). An ``on`` extractor without them is an error. A data set's own benchmark
    protocols (``datamodule.metrics``: Stacked MNIST's mode count and KL) are scored as if named in ``extra``."""
    name = getattr(datamodule, "name", type(datamodule).__name__)
    extra = [*getattr(datamodule, "metrics", ()), *extra]
    labelled = getattr(datamodule, "num_classes", None) is not None
    has_test = "test" in getattr(datamodule, "splits", ())
    weights = inception_weights(inception_path)
    for kind, what in (("classifier", "the classifier"), ("heldout", "the held-out scorer")):
        if modes.get(kind) == "on" and not labelled:
            expected = f"auto or off for {name}, which has no class labels to train {what} on"
            raise ArgumentError(kind, "on", expected, "auto")
    if modes.get("heldout") == "on" and not has_test:
        raise ArgumentError("heldout", "on", f"auto or off for {name}, which has no test split to train it on", "auto")
    if modes.get("inception") == "on" and weights is None:
        raise FileNotFoundError(missing_inception_message(inception_path))
    ready = {"classifier": labelled, "inception": weights is not None, "heldout": labelled and has_test}
    return [p for p in chosen_protocols(modes, num_samples, reference, extra, conditional) if ready[p.extractor]]
