"""Quality metrics under named protocols (``fid50k_train``, ``cfid1k_test``, ``hfid10k_test``): a registry of
metrics, feature extractors, cached reference statistics, the maths, and the Lightning callback that logs them."""

from dcgan.metrics import library  # registers the shipped metrics
from dcgan.metrics.build import Extractors, build_suite
from dcgan.metrics.classifier import DigitClassifier, HeldOutClassifier, cached_classifier, train_classifier
from dcgan.metrics.extractors import inception_weights, missing_inception_message
from dcgan.metrics.maths import class_balance, frechet_distance, inception_score, kernel_distance
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.registry import METRICS, Metric, register_extra, register_metric
from dcgan.metrics.select import available_protocols, check_modes, chosen_protocols
from dcgan.metrics.suite import QualitySuite, Settings

__all__ = [
    "METRICS",
    "DigitClassifier",
    "Extractors",
    "HeldOutClassifier",
    "Metric",
    "Protocol",
    "QualitySuite",
    "Settings",
    "available_protocols",
    "build_suite",
    "cached_classifier",
    "check_modes",
    "chosen_protocols",
    "class_balance",
    "frechet_distance",
    "inception_score",
    "inception_weights",
    "kernel_distance",
    "library",
    "missing_inception_message",
    "register_extra",
    "register_metric",
    "train_classifier",
]
