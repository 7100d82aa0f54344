"""The three networks of the lectures, built from the blocks and sized by a dry forward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.blocks import Inception, ResidualBlock
from cnnlab.models.registry import register_model


class _Net(nn.Module):
    """A feature extractor followed by one linear layer whose input size is found by a dry forward."""

    MIN_IMAGE_SIZE = 16  # two 5x5 convolutions and two 2x2 poolings leave at least one pixel

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if image_size < self.MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {self.MIN_IMAGE_SIZE} for this network, got {image_size}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size

    def _build_head(self) -> None:
        with torch.no_grad():
            dummy = torch.zeros(1, self.in_channels, self.image_size, self.image_size)
            n_features = self.features(dummy).flatten(1).shape[1]
        self.fc = nn.Linear(n_features, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class BasicCNN(_Net):
    """The previous lecture's CNN: two 5x5 convolutions, each followed by 2x2 max pooling and ReLU."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self._build_head()  # 320 -> 10 for 28x28 inputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # N x 10 x 12 x 12
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # N x 20 x 4 x 4
        return x


class InceptionNet(_Net):
    """The lecture's Inception network: conv -> Inception -> conv -> Inception -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.incep1 = Inception(10)
        self.conv2 = nn.Conv2d(self.incep1.out_channels, 20, kernel_size=5)  # 88 -> 20
        self.incep2 = Inception(20)
        self._build_head()  # 1408 -> 10 for 28x28 inputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # N x 10 x 12 x 12
        x = self.incep1(x)  # N x 88 x 12 x 12
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # N x 20 x 4 x 4
        x = self.incep2(x)  # N x 88 x 4 x 4
        return x


class ResNet(_Net):
    """The lecture's residual network: conv -> ResidualBlock -> conv -> ResidualBlock -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=5)
        self.rblock1 = ResidualBlock(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.rblock2 = ResidualBlock(32)
        self._build_head()  # 512 -> 10 for 28x28 inputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # N x 16 x 12 x 12
        x = self.rblock1(x)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # N x 32 x 4 x 4
        x = self.rblock2(x)
        return x


# Epochs of the default recipe: the lecture's three together take about 10 minutes on 2 cores.
@register_model(epochs=15, lecture=True)
def basic_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> BasicCNN:
    """The previous lecture's basic CNN (8,490 parameters on MNIST)."""
    return BasicCNN(in_channels, num_classes, image_size)


@register_model(epochs=12, lecture=True)
def inception_net(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> InceptionNet:
    """The lecture's Inception network (97,298 parameters on MNIST)."""
    return InceptionNet(in_channels, num_classes, image_size)


@register_model(epochs=12, lecture=True)
def resnet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> ResNet:
    """The lecture's residual network (41,514 parameters on MNIST)."""
    return ResNet(in_channels, num_classes, image_size)
