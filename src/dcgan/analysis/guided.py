"""What D's features respond to, as Radford et al. (2015) show in sec. 6.2 and Figure 5: the real images that excite
a hidden channel most, guided backpropagation (Springenberg et al. 2014) of that channel onto each image, the same
for a D of random weights (the paper's control), and the networks' outermost filters. Plain PyTorch.

Any D that has ``features(x)`` (the project's :class:`dcgan.nets.Discriminator`: each hidden block's output, after
its activation) can be read. A packing D mixes images before its features, so it has no per-image ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _GuidedRelu(torch.autograd.Function):
    """Forward: ReLU or leaky ReLU as the net has it. Backward: only positive gradients, and only where the input
    was positive (Springenberg et al.'s guided backpropagation): what in the image excites the unit."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.leaky_relu(x, slope) if slope else F.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype), None


class GuidedLeakyReLU(nn.LeakyReLU):
    """A ``LeakyReLU`` (a ``ReLU`` at slope 0) whose backward is guided; still an ``nn.LeakyReLU`` for ``features``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedRelu.apply(x, self.negative_slope)


class GuidedReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedRelu.apply(x, 0.0)


def guided_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode whose ReLUs and leaky ReLUs backpropagate guided (never in place)."""
    guided = copy.deepcopy(net).eval()
    for module in list(guided.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.LeakyReLU):
                setattr(module, name, GuidedLeakyReLU(child.negative_slope))
            elif isinstance(child, nn.ReLU):
                setattr(module, name, GuidedReLU())
    return guided


def _check_features(d: nn.Module) -> None:
    if not callable(getattr(d, "features", None)):
        raise ValueError(f"{type(d).__name__} has no features(x) (its hidden layers' outputs) to read.")
    if getattr(d, "packing", 1) > 1:
        raise ValueError(
            f"{type(d).__name__} packs images before its hidden channels: it has no per-image features. Visualize a "
            "checkpoint of an unpacked D."
        )


@torch.no_grad()
def channel_scores(d: nn.Module, images: torch.Tensor, layer: int = -1, batch_size: int = 256) -> torch.Tensor:
    """(N, C): each image's mean activation of each channel of hidden layer ``layer`` (eval mode: per image)."""
    _check_features(d)
    was_training = d.training
    d.eval()
    try:
        scores = [d.features(chunk)[layer].float().mean(dim=(2, 3)) for chunk in images.split(batch_size)]
    finally:
        d.train(was_training)
    return torch.cat(scores)


def top_channels(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` channels with the highest mean activation over the images."""
    return scores.mean(dim=0).topk(min(k, scores.size(1))).indices


def top_images(scores: torch.Tensor, channel: int, n: int) -> torch.Tensor:
    """Indices of the ``n`` images that excite ``channel`` most, most first."""
    return scores[:, channel].topk(min(n, scores.size(0))).indices


def guided_maps(d: nn.Module, images: torch.Tensor, channel: int, layer: int = -1) -> torch.Tensor:
    """Guided backpropagation of channel ``channel`` of hidden layer ``layer`` (summed over positions) onto each
    image: (N, C, H, W), the shape of ``images``. D is copied, so the trained one is left as it was."""
    _check_features(d)
    guided = guided_copy(d)
    for p in guided.parameters():
        p.requires_grad_(False)
    x = images.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        activation = guided.features(x)[layer][:, channel].sum()
        (grad,) = torch.autograd.grad(activation, x)
    return grad


def random_like(build: Callable[[], nn.Module], images: torch.Tensor, seed: int = 0) -> nn.Module:
    """A D as ``build()`` makes it (the paper's random N(0, 0.02) weights, spectral norm and all), drawn on the CPU
    from ``seed`` (the global generator is left as it was), on the device of ``images``, in eval mode, with its
    BatchNorm statistics measured on ``images``: an untrained BN's running statistics (0 and 1) would shrink the
    activations layer by layer, and the control would show that rather than the weights."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        fresh = build()
    fresh = fresh.to(images.device)
    norms = [m for m in fresh.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        fresh.train()
        with torch.no_grad():
            for chunk in images.split(256):
                fresh.features(chunk)
    return fresh.eval()


def to_display(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [-1, 1] on its own (guided gradients are tiny and vary by orders of magnitude)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low).clamp(min=1e-12)
    return ((flat - low[:, None]) / scale[:, None] * 2 - 1).view_as(maps)


def first_conv_filters(d: nn.Module) -> torch.Tensor:
    """D's first convolution's filters, (out, in, k, k), each scaled to [-1, 1] for display."""
    conv = next(m for m in d.modules() if isinstance(m, nn.Conv2d))
    return to_display(conv.weight.detach().float().cpu())


def last_deconv_filters(g: nn.Module) -> torch.Tensor:
    """G's last transposed convolution's filters as images, (in, out, k, k): one per input channel."""
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    if not deconvs:
        raise ValueError(f"{type(g).__name__} has no transposed convolution to show the filters of.")
    return to_display(deconvs[-1].weight.detach().float().cpu())
