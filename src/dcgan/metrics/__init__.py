"""Quality metrics: FID/KID/IS via torchmetrics, and an offline classifier-based FID and class coverage."""

from dcgan.metrics.classifier import DigitClassifier, cached_classifier, train_classifier
from dcgan.metrics.quality import QualitySuite, class_coverage, inception_weights, missing_inception_message

__all__ = [
    "DigitClassifier",
    "QualitySuite",
    "cached_classifier",
    "class_coverage",
    "inception_weights",
    "missing_inception_message",
    "train_classifier",
]
