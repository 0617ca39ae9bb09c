"""Data sets and the DataModules that serve them."""

from dcgan.data.base import InMemoryDataModule, to_unit_range
from dcgan.data.digits import DigitsDataModule
from dcgan.data.mnist import MNISTDataModule

__all__ = ["DigitsDataModule", "InMemoryDataModule", "MNISTDataModule", "to_unit_range"]
