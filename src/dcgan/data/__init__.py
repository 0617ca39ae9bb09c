"""Data sets and the DataModules that serve them."""

from dcgan.data.base import DataError, InMemoryDataModule, to_unit_range
from dcgan.data.cifar import CIFAR10DataModule
from dcgan.data.digits import DigitsDataModule
from dcgan.data.files import CelebADataModule, ImageFolderDataModule
from dcgan.data.mnist import FashionMNISTDataModule, MNISTDataModule
from dcgan.data.stacked_mnist import StackedMNISTDataModule, mode_of

__all__ = [
    "CIFAR10DataModule",
    "CelebADataModule",
    "DataError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "StackedMNISTDataModule",
    "mode_of",
    "to_unit_range",
]
