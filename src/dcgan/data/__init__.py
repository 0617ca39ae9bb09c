"""Data sets and the DataModules that serve them."""

from dcgan.data.base import DataError, InMemoryDataModule, to_unit_range
from dcgan.data.cifar import CIFAR10DataModule
from dcgan.data.digits import DigitsDataModule
from dcgan.data.files import CelebADataModule, ImageFolderDataModule
from dcgan.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "CelebADataModule",
    "DataError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "to_unit_range",
]
