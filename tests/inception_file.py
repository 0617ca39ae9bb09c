"""A stand-in for torch-fidelity's Inception-v3 weights file, written with seeded random values.

FID/KID/IS need torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth`` (the TF 2015-12-05 graph ported to
PyTorch), and it cannot be downloaded here. The tests that check our metric pipeline against torch-fidelity's own
``calculate_metrics`` only need both sides to read the same file, so this writes one in exactly that file's layout:
a plain dict of float32 tensors, ``<block>.conv.weight``, ``<block>.bn.{weight,bias,running_mean,running_var}``
(no ``num_batches_tracked``: BatchNorm fills it in on loading, as it does for the real file) and
``fc.{weight,bias}``. Names and shapes come from torch-fidelity's own model class, built on the meta device with
nothing downloaded or loaded.

The values are scaled so that features stay finite and O(1) through all layers and differ from image to image:
every filter (and every row of ``fc``) sums to zero, so a layer passes on structure rather than the positive mean of
the ReLU outputs below it, and batch norm stays close to the identity. The numbers say nothing about image quality;
only agreement between two pipelines on the same file means anything.
"""

from __future__ import annotations

import pathlib
from unittest import mock

import torch
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

CONV_GAIN = 3.0  # conv weights have variance CONV_GAIN / fan_in: keeps features O(1) after ~20 conv + ReLU layers
LOGIT_GAIN = 20.0  # fc weights have std LOGIT_GAIN / sqrt(2048): logits spread over units, softmax (IS) is not flat


def inception_layout() -> dict[str, torch.Size]:
    """Name and shape of every tensor that torch-fidelity's FeatureExtractorInceptionV3 loads."""
    extractor = fidelity_inception.FeatureExtractorInceptionV3
    with (
        torch.device("meta"),
        mock.patch.object(fidelity_inception, "load_state_dict_from_url"),  # never downloads
        mock.patch.object(extractor, "load_state_dict"),  # keeps the empty meta tensors
    ):
        net = extractor("inception-v3-compat", ["2048"])
    return {name: t.shape for name, t in net.state_dict().items() if not name.endswith("num_batches_tracked")}


def _random_tensor(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator)
    if name.endswith("conv.weight") or name == "fc.weight":
        centred = noise - noise.mean(dim=tuple(range(1, noise.dim())), keepdim=True)  # each filter / row sums to 0
        fan_in = noise[0].numel()
        return centred * (LOGIT_GAIN if name == "fc.weight" else CONV_GAIN**0.5) / fan_in**0.5
    if name.endswith(("bn.weight", "bn.running_var")):
        return (0.1 * noise).exp()  # positive, near 1
    return 0.1 * noise  # bn.bias, bn.running_mean, fc.bias


def write_random_inception_weights(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a random stand-in for ``pt_inception-2015-12-05-6726825d.pth`` to ``path``; same seed, same file."""
    generator = torch.Generator().manual_seed(seed)
    weights = {name: _random_tensor(name, shape, generator) for name, shape in inception_layout().items()}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path)
    return path
