"""Data modules for msforge experiments."""
from .moving_mnist import MovingMNIST, MovingMNISTDataModule, MovingMNISTFile

__all__ = ["MovingMNISTDataModule", "MovingMNIST", "MovingMNISTFile"]
