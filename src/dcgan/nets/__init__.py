"""The networks, in plain PyTorch: DCGAN's generator and discriminator, their shared layers and D wrappers.

A G or D of your own is any ``nn.Module`` with the same forward, named by ``_target_`` in
``conf/model/generator/`` or ``conf/model/discriminator/`` (docs/package.md, "Plug-ins").
"""

from dcgan.nets.discriminator import Discriminator
from dcgan.nets.generator import Generator
from dcgan.nets.layers import MinibatchStdDev, init_dcgan_weights, num_resolution_doublings
from dcgan.nets.packing import Packed

__all__ = [
    "Discriminator",
    "Generator",
    "MinibatchStdDev",
    "Packed",
    "init_dcgan_weights",
    "num_resolution_doublings",
]
