"""dcgan: Deep Convolutional GANs (Radford, Metz & Chintala 2015) with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
