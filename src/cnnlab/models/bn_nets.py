"""Stronger networks in the lecture's spirit: the same two ideas, with batch norm, width and depth added.

`resnet_bn` is ResNet's basic block as He et al. built it (conv-BN-ReLU units, a 1x1 convolution with
stride on the shortcut where the shape changes); `inception_bn` is GoogLeNet's block with batch norm after
every convolution and the 5x5 branch factorised into two 3x3s, as Inception v2 did. Both end in global
average pooling, so they take any image size from 8 pixels up and any number of channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.blocks import BranchedBlock, SkipBlock
from cnnlab.models.registry import register_model


class ConvBN(nn.Sequential):
    """conv (no bias: batch norm has one) -> batch norm -> ReLU, `padding` keeping the size at stride 1.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: square kernel, odd.
        stride: 2 halves the map.
        relu: end with a ReLU (False where a sum follows, as in the residual block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, relu: bool = True) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the map centred, got {kernel_size}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class BasicBlockBN(SkipBlock):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)): ResNet's basic block.

    Args:
        in_channels: channels in.
        out_channels: channels out.
        stride: 2 halves the map; the shortcut is then a strided 1x1 conv + BN (also when channels change),
            otherwise the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.conv1 = ConvBN(in_channels, out_channels, 3, stride)
        self.conv2 = ConvBN(out_channels, out_channels, 3, relu=False)
        nn.init.zeros_(self.conv2[1].weight)  # each block starts as the identity: a deep stack trains from step one
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBN(in_channels, out_channels, 1, stride, relu=False)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = self.shortcut(x)
        out = self.conv2(self.conv1(x))
        return identity, out  # forward: relu(out + identity)


class InceptionBN(BranchedBlock):
    """GoogLeNet's Inception block with batch norm: 1x1 ; 1x1 -> 3x3 ; 1x1 -> 3x3 -> 3x3 (the 5x5, factorised) ;
    3x3 max pool -> 1x1, concatenated. Every convolution is conv-BN-ReLU.

    Args:
        in_channels: channels in.
        c1: channels of the 1x1 branch.
        c3: (reduction, out) of the 3x3 branch.
        c5: (reduction, out) of the double-3x3 branch.
        cp: channels of the pooling branch's 1x1.
    """

    def __init__(self, in_channels: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], cp: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, c1, 1)
        self.branch3x3 = nn.Sequential(ConvBN(in_channels, c3[0], 1), ConvBN(c3[0], c3[1], 3))
        self.branch3x3dbl = nn.Sequential(ConvBN(in_channels, c5[0], 1), ConvBN(c5[0], c5[1], 3), ConvBN(c5[1], c5[1], 3))
        self.branch_pool = ConvBN(in_channels, cp, 1)
        self.describe_branches({
            "1x1": (c1, ("branch1x1",)),
            "3x3": (c3[1], ("branch3x3",)),
            "3x3dbl": (c5[1], ("branch3x3dbl",)),
            "pool": (cp, ("branch_pool",)),
        })

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return [self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(pooled)]


class _PooledNet(nn.Module):
    """features -> global average pool -> linear: no head to size, any image size the features allow."""

    MIN_IMAGE_SIZE = 8

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or image_size < self.MIN_IMAGE_SIZE:
            raise ValueError(
                f"need in_channels >= 1, num_classes >= 2, image_size >= {self.MIN_IMAGE_SIZE}; "
                f"got {in_channels}, {num_classes}, {image_size}"
            )
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNetBN(_PooledNet):
    """conv3x3 stem, then stages of two basic blocks; every stage after the first halves the map and
    doubles the width. 28x28: 32 x 28 x 28 -> 32 x 14 x 14 -> 64 x 7 x 7 -> pool -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, widths=(32, 64), blocks: int = 2) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.stem = ConvBN(in_channels, widths[0], 3)
        stages, c = [], widths[0]
        for w in widths:
            stages += [BasicBlockBN(c, w, stride=2)] + [BasicBlockBN(w, w) for _ in range(blocks - 1)]
            c = w
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x 32 x 28 x 28
        return self.stages(x)  # N x 64 x 7 x 7


class InceptionNetBN(_PooledNet):
    """conv3x3 stem, 2x2 max pool, two Inception blocks, 2x2 max pool, two more, then pool and linear.
    28x28: 32 x 14 x 14 -> 64 -> 96 channels -> 7 x 7 -> 128 -> 128 -> pool -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.stem = ConvBN(in_channels, 32, 3)
        self.incep1 = InceptionBN(32, 16, (16, 24), (8, 12), 12)  # 64 out
        self.incep2 = InceptionBN(64, 24, (24, 32), (12, 24), 16)  # 96 out
        self.incep3 = InceptionBN(96, 32, (32, 48), (16, 24), 24)  # 128 out
        self.incep4 = InceptionBN(128, 32, (32, 48), (16, 24), 24)  # 128 out
        self.fc = nn.Linear(self.incep4.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.stem(x), 2)  # N x 32 x 14 x 14
        x = self.incep2(self.incep1(x))  # N x 96 x 14 x 14
        x = F.max_pool2d(x, 2)  # N x 96 x 7 x 7
        return self.incep4(self.incep3(x))  # N x 128 x 7 x 7


@register_model(epochs=15)  # about 18 minutes on 2 cores (about 70 s an epoch)
def resnet_bn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> ResNetBN:
    """Residual network with batch norm, 4 basic blocks and downsampling shortcuts (not in the lecture)."""
    return ResNetBN(in_channels, num_classes, image_size)


@register_model(epochs=15)
def inception_bn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> InceptionNetBN:
    """GoogLeNet-style network with batch norm and 4 Inception blocks (not in the lecture)."""
    return InceptionNetBN(in_channels, num_classes, image_size)
