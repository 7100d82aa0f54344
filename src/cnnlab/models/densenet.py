"""DenseNet-BC (Huang, Liu, van der Maaten and Weinberger, Densely Connected Convolutional Networks, CVPR 2017), the
paper's CIFAR network on 28x28 pictures. Every layer reads the maps of every layer before it in its block: a layer
adds k new maps (the growth rate) and concatenates them onto all it was given.

    conv 3x3 -> 2k channels                                  N x 2k x 28 x 28
    dense block 1: n bottleneck layers, each +k channels     28 x 28
    transition: BN-ReLU-conv 1x1 to floor(theta m), 2x2 average pool    14 x 14
    dense block 2                                            14 x 14
    transition                                               7 x 7
    dense block 3                                            7 x 7
    BN-ReLU, global average pool, linear

A bottleneck layer is BN-ReLU-conv 1x1 (4k channels)-BN-ReLU-conv 3x3 (k channels), both without bias ("B"); a
transition keeps floor(theta m) of its m channels ("C", theta < 1). The depth counts the convolutions and the linear
layer: 3 blocks x n layers x 2, the first convolution, 2 transitions and the linear layer, L = 6n + 4 (the paper's
L = 100, k = 12 is n = 16 and 0.8M parameters).

The family's three numbers are the model's design (`--block`), one short spec as `designed` takes one:

    depth=40,growth=12,compression=0.5

Keys in any order, spaces and case ignored, a key left out keeps its default ("" is the default design); `canonical`
writes all three in that order. Each number is bounded (DEPTHS, GROWTHS) so that a design stays trainable on a laptop.

Each bottleneck layer is a BranchedBlock of two branches in concatenation order: "given" (its input, unchanged: an
identity) and "new" (its k new maps). So the inside view shows a dense layer as what it is, and switching "new" off
is the layer adding zeros, switching "given" off the layer forgetting everything before it.

Deviations from the paper's CIFAR network: the pooling is the paper's 2x2 average pooling, but with two transitions
the 7x7 map is never pooled, so 28 -> 14 -> 7 needs no ceil mode or padding (an odd side, from another image size,
drops its last row and column, as in the paper's code). The default depth and growth are far smaller than the
paper's (DEFAULT: measured so that an MNIST epoch costs about what resnet_bn's costs on 2 CPU cores).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from cnnlab.models.blocks import BranchedBlock
from cnnlab.models.bn_nets import _PooledNet
from cnnlab.models.registry import register_model

DEPTHS = (10, 100)  # L = 6n + 4 from 1 to 16 layers per block; 100 is the paper's 0.8M-parameter DenseNet-BC
GROWTHS = (1, 48)  # k, new maps per layer: the paper's CIFAR networks take 12, 24 and 40
KEYS = ("depth", "growth", "compression")  # a spec's keys, in the canonical order
MAX_SPEC = 200  # characters of a spec: the longest canonical one is 45
BOTTLENECK = 4  # a bottleneck's 1x1 convolution gives 4k maps, as in the paper
EXAMPLE = "depth=40,growth=12,compression=0.5"


def _depths() -> str:
    low, high = DEPTHS
    return f"6n + 4 from {low} to {high} ({low}, {low + 6}, {low + 12}, ..., {high})"


@dataclass(frozen=True)
class DenseDesign:
    """A DenseNet-BC of the family, checked whole when made (a ValueError of one line says what is wrong).

    Args:
        depth: L = 6n + 4, n bottleneck layers in each of the 3 dense blocks (DEPTHS).
        growth: k, the maps each layer adds (GROWTHS); the first convolution gives 2k.
        compression: theta in (0, 1], the share of its m channels a transition keeps: floor(theta m).
    """

    depth: int
    growth: int
    compression: float

    def __post_init__(self) -> None:
        low, high = DEPTHS
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or not low <= self.depth <= high:
            raise ValueError(f"depth={self.depth!r} is out of range; choose {_depths()}")
        if (self.depth - 4) % 6:
            raise ValueError(f"depth={self.depth} is not 6n + 4 (3 dense blocks of n layers of 2 convolutions, the "
                             f"first convolution, 2 transitions and the linear layer); choose {_depths()}")
        low, high = GROWTHS
        if isinstance(self.growth, bool) or not isinstance(self.growth, int) or not low <= self.growth <= high:
            raise ValueError(f"growth={self.growth!r} is out of range; choose a whole number from {low} to {high}")
        theta = self.compression
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta <= 1:
            raise ValueError(f"compression={theta!r} is out of range; choose a number in (0, 1], e.g. 0.5")
        object.__setattr__(self, "compression", float(theta))
        for t, m in enumerate(self.transition_inputs(), 1):
            if self.kept(m) < 1:
                raise ValueError(f"compression={self.compression!r} leaves transition {t} with floor({self.compression!r}"
                                 f" x {m}) = 0 channels; choose a compression of at least {1 / m:.3g}")

    @property
    def layers(self) -> int:
        """n, the bottleneck layers of each dense block."""
        return (self.depth - 4) // 6

    def kept(self, m: int) -> int:
        """floor(theta m): a transition's output channels from its m. Worked out on the decimal as written (0.29 x
        100 = 29, where the float product is 28.999...)."""
        return math.floor(Fraction(repr(self.compression)) * m)

    def transition_inputs(self) -> list[int]:
        """The channels m that each of the two transitions reads."""
        out, c = [], 2 * self.growth
        for _ in range(2):
            c += self.layers * self.growth
            out.append(c)
            c = self.kept(c)
        return out

    @classmethod
    def parse(cls, spec: str) -> "DenseDesign":
        """The design a spec names ("depth=40,growth=12,compression=0.5"; "" is DEFAULT)."""
        if not isinstance(spec, str) or len(spec) > MAX_SPEC:
            raise ValueError(f"a DenseNet-BC design is a text of at most {MAX_SPEC} characters, such as {EXAMPLE}")
        text = re.sub(r"\s+", "", spec).lower()
        given: dict[str, str] = {}
        for item in text.split(",") if text else []:
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"cannot read {item!r}: write a DenseNet-BC design as KEY=VALUE,... with keys "
                                 f"{', '.join(KEYS)}, e.g. {EXAMPLE}")
            if key not in KEYS:
                raise ValueError(f"unknown key {key!r}; choose from {', '.join(KEYS)}")
            if key in given:
                raise ValueError(f"{key} is given twice")
            given[key] = value
        return cls(depth=_whole("depth", given["depth"], _depths()) if "depth" in given else DEFAULT.depth,
                   growth=_whole("growth", given["growth"], f"a whole number from {GROWTHS[0]} to {GROWTHS[1]}")
                   if "growth" in given else DEFAULT.growth,
                   compression=_decimal(given["compression"]) if "compression" in given else DEFAULT.compression)

    @property
    def spec(self) -> str:
        """The canonical spec: all three keys, in KEYS order (repr keeps the compression exact: 0.5, 1.0)."""
        return f"depth={self.depth},growth={self.growth},compression={self.compression!r}"

    def __str__(self) -> str:
        return self.spec


def _whole(key: str, text: str, allowed: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"{key}: {text[:12]!r} is not a whole number; choose {allowed}")
    return int(text)


def _decimal(text: str) -> float:
    if not re.fullmatch(r"\d{1,6}(\.\d{0,6})?|\.\d{1,6}", text):
        raise ValueError(f"compression: {text[:12]!r} is not a number; choose a decimal in (0, 1], e.g. 0.5")
    return float(text)


# The default design: depth 16 is 2 layers per block, the fewest where a layer reads another layer's maps; growth 4
# is the largest that trains an MNIST epoch no slower than resnet_bn. Train steps of 128 images, channels_last, 2
# threads, interleaved with resnet_bn's, median of 6 x 2 steps, on a 2-core Intel Xeon (AVX512) with torch 2.13:
# resnet_bn 1,800 images/s; growth 4: 1,780 (5,322 parameters); 6: 1,020; 8: 1,280; 12: 800; depth 22, growth 4:
# 1,100; the paper's depth 100, growth 12: 52 (an MNIST epoch 34 s, 34 s, 59 s, 47 s, 75 s, 55 s, 19 min). Batch
# norm's backward is the largest cost: a dense layer normalises everything it is given.
DEFAULT = DenseDesign(depth=16, growth=4, compression=0.5)


def design_of(block: str) -> DenseDesign:
    """The design a run's config names (its `block`; "" is DEFAULT)."""
    return DenseDesign.parse(block) if block else DEFAULT


def canonical(block: str) -> str:
    """The canonical spec of a run's `block` (the registry's `design` fact: what a run records)."""
    return design_of(block).spec


class DenseLayer(BranchedBlock):
    """A bottleneck layer of a dense block: [x, H(x)], its input given on unchanged and k new maps computed from it,
    H = BN-ReLU-conv 1x1 (4k maps)-BN-ReLU-conv 3x3 (k maps), both convolutions without bias (batch norm has one).

    Args:
        in_channels: channels of its input (everything the block's layers before it gave).
        growth: k, the new maps it adds.
    """

    TITLE = "dense"  # the inside view calls it a dense layer, not an Inception block

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        if in_channels < 1 or growth < 1:
            raise ValueError(f"need in_channels >= 1 and growth >= 1, got {in_channels}, {growth}")
        width = BOTTLENECK * growth
        self.given = nn.Identity()  # a module, so that the branch has one to name (and no parameters)
        self.new = nn.Sequential(OrderedDict(
            norm1=nn.BatchNorm2d(in_channels), relu1=nn.ReLU(inplace=True),
            conv1=nn.Conv2d(in_channels, width, kernel_size=1, bias=False),
            norm2=nn.BatchNorm2d(width), relu2=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(width, growth, kernel_size=3, padding=1, bias=False),
        ))
        self.describe_branches({"given": (in_channels, ("given",)), "new": (growth, ("new",))})

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.given(x), self.new(x)]  # N x (in_channels + k) x H x W once concatenated


class Transition(nn.Sequential):
    """Between two dense blocks: BN-ReLU-conv 1x1 to `out_channels` (floor(theta m)), then 2x2 average pooling.

    Args:
        in_channels: m, the channels of the dense block before it.
        out_channels: what it keeps.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        if not 1 <= out_channels <= in_channels:
            raise ValueError(f"a transition keeps from 1 to its {in_channels} channels, not {out_channels}")
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels), relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            pool=nn.AvgPool2d(kernel_size=2, stride=2),
        ))


class DenseNetBC(_PooledNet):
    """The paper's CIFAR DenseNet-BC: conv 3x3 to 2k, dense blocks dense1-dense3 of n layers each with transitions
    trans1 and trans2 between them, BN-ReLU, global average pooling, linear. 28x28: 28 x 28 -> 14 x 14 -> 7 x 7.

    Args:
        in_channels, num_classes, image_size: the data's, as for every registered network.
        design: depth, growth and compression (default: DEFAULT).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 design: DenseDesign | None = None) -> None:
        super().__init__(in_channels, num_classes, image_size)
        self.design = design = design or DEFAULT
        k = design.growth
        self.conv1 = nn.Conv2d(in_channels, 2 * k, kernel_size=3, padding=1, bias=False)
        c = 2 * k
        for b in (1, 2, 3):
            layers = [(f"layer{i + 1}", DenseLayer(c + i * k, k)) for i in range(design.layers)]
            setattr(self, f"dense{b}", nn.Sequential(OrderedDict(layers)))
            c += design.layers * k
            if b < 3:
                setattr(self, f"trans{b}", Transition(c, design.kept(c)))
                c = design.kept(c)
        self.norm = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():  # as the authors' code (after fb.resnet.torch): He's normal, fan out; zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # N x 2k x 28 x 28
        x = self.trans1(self.dense1(x))  # N x floor(theta (2k + nk)) x 14 x 14
        x = self.trans2(self.dense2(x))  # N x floor(theta m) x 7 x 7
        x = self.dense3(x)  # N x (that + nk) x 7 x 7
        return self.relu(self.norm(x))


@register_model(epochs=15, design=canonical, family="densenet")
def densenet_bc(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, block: str = "") -> DenseNetBC:
    """DenseNet-BC of Huang et al. (CVPR 2017): 3 dense blocks of bottleneck layers (--block depth=,growth=,compression=)."""
    return DenseNetBC(in_channels, num_classes, image_size, design_of(block))
