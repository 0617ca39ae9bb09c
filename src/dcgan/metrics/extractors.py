"""Feature extractors: one forward per image returns every output the metrics need (features and logits)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from dcgan.metrics.classifier import weights_digest

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's port of the TF 2015-12-05 graph


def inception_weights(path: str | None) -> Path | None:
    """The Inception weights file from ``path`` or ``$DCGAN_INCEPTION_WEIGHTS``, if it exists."""
    candidate = path or os.environ.get("DCGAN_INCEPTION_WEIGHTS")
    return Path(candidate).expanduser() if candidate and Path(candidate).expanduser().is_file() else None


def missing_inception_message(path: str | None) -> str:
    where = path or os.environ.get("DCGAN_INCEPTION_WEIGHTS") or "(not set)"
    return (
        f"Inception weights not found at {where}. FID/KID/IS need torch-fidelity's {INCEPTION_FILE} "
        "(the TF 2015-12-05 Inception port that torch-fidelity, StudioGAN and torchmetrics use); download it on a "
        "machine with internet access (torch-fidelity's release assets), then set "
        "callbacks.quality.inception_weights=/path/to/it or DCGAN_INCEPTION_WEIGHTS."
    )


class Extractor(nn.Module):
    """Maps float images in [-1, 1] to a dict of (B, D) outputs; ``digest`` names the network and its weights."""

    kind: str
    digest: str
    outputs: tuple[str, ...]


class InceptionExtractor(Extractor):
    """torch-fidelity's Inception-v3 (FID protocol): pool3 features and unbiased logits from one forward.

    Images are quantised to uint8 as a PNG would store them and gray is replicated to RGB, then torch-fidelity's
    own module resizes to 299 (its TF1-compatible bilinear) and normalises: the numbers equal
    ``torch_fidelity.calculate_metrics`` on the same images written as PNGs.
    """

    kind = "inception"
    outputs = ("pool", "logits")

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        )
        self.digest = "inception-" + _file_digest(weights)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.size(1) == 1 else x
        pixels = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pool, logits = self.net(pixels)
        return {"pool": pool, "logits": logits}


class ClassifierExtractor(Extractor):
    """A trained classifier's feature layer and logits (``DigitClassifier`` or ``HeldOutClassifier``)."""

    outputs = ("features", "logits")

    def __init__(self, classifier: nn.Module, kind: str) -> None:
        super().__init__()
        self.classifier, self.kind = classifier.eval(), kind
        self.digest = f"{kind}-{type(classifier).__name__}-{weights_digest(classifier)}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.classifier.features(x.float())
        return {"features": features, "logits": self.classifier.head(features)}


class PerChannelExtractor(ClassifierExtractor):
    """A classifier of one-channel images read on each channel of a stacked image (Stacked MNIST: a digit in each
    of R, G and B), as PacGAN's protocol scores it.

    ``features``: the channels' feature vectors side by side (C x D). ``logits``: log-probabilities over the K^C
    modes, log p(mode) = sum over channels of log p_c(digit), with the first channel the most significant digit
    (mode 473 = 4 in R, 7 in G, 3 in B), so that its argmax is the triple of per-channel argmaxes and the class
    metrics (``class_balance``, ``class_acc``, ``modes``) read it as a K^C-class classifier.
    """

    def __init__(self, classifier: nn.Module, kind: str) -> None:
        super().__init__(classifier, kind)
        self.digest = self.digest.replace(f"{kind}-", f"{kind}-per-channel-", 1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, log_p = [], None
        for c in range(x.size(1)):
            f = self.classifier.features(x[:, c : c + 1].float())  # (B, D)
            digit = torch.log_softmax(self.classifier.head(f).float(), dim=1)  # (B, K)
            log_p = digit if log_p is None else (log_p[:, :, None] + digit[:, None, :]).flatten(1)  # (B, K^(c+1))
            features.append(f)
        return {"features": torch.cat(features, dim=1), "logits": log_p}


def _file_digest(path: Path) -> str:
    """sha1 of a file's bytes, read in 1 MB blocks (the real Inception file is 91 MB: about 0.1 s)."""
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:16]
