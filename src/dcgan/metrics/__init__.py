"""Quality metrics under named protocols (``fid50k_train``, ``cfid1k_test``, ``hfid10k_test``): feature extractors,
cached reference statistics, the maths, and the Lightning callback that logs them."""

from dcgan.metrics.build import Extractors, build_suite
from dcgan.metrics.classifier import DigitClassifier, HeldOutClassifier, cached_classifier, train_classifier
from dcgan.metrics.extractors import inception_weights, missing_inception_message
from dcgan.metrics.maths import class_coverage, frechet_distance, inception_score, kernel_distance
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.suite import QualitySuite, Settings

__all__ = [
    "DigitClassifier",
    "Extractors",
    "HeldOutClassifier",
    "Protocol",
    "QualitySuite",
    "Settings",
    "build_suite",
    "cached_classifier",
    "class_coverage",
    "frechet_distance",
    "inception_score",
    "inception_weights",
    "kernel_distance",
    "missing_inception_message",
    "train_classifier",
]
