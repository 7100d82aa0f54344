"""The residual units of He, Zhang, Ren and Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016), as one
deep residual family on 28x28 images: the same network, unit after unit, with the unit's shortcut (the paper's
Fig. 2) or the place of its batch norm and ReLU (Fig. 4) changed, and nothing else.

A unit computes y = h(x) + F(x) and passes on f(y) (`SkipBlock`: `paths` gives h(x) and F(x), `after` is f). The
paper's argument is about h and f: when both are identities, x_L = x_l + (the sum of the units' F between them), so
the gradient of the last unit reaches every earlier one undiminished; a scaling, a gate, a convolution or a dropout on
the shortcut multiplies that gradient unit after unit, and a ReLU or a batch norm after the sum stands in its way.

    variant                 unit                                               paper
    lecture                 conv - ReLU - conv, + x, ReLU (no batch norm)      the lecture's block
    original                conv-BN-ReLU-conv-BN, + x, ReLU                    Fig. 2(a), Fig. 4(a)
    scaling                 0.5 * shortcut + 0.5 * F                           Fig. 2(b)
    gating                  (1 - g) * shortcut + g * F, g = sigmoid(1x1 conv)  Fig. 2(c), exclusive gating
    shortcut_gating         (1 - g) * shortcut + F                             Fig. 2(d), shortcut-only gating
    conv_shortcut           1x1 conv (+ BN) on the shortcut of every unit      Fig. 2(e)
    dropout_shortcut        dropout(0.5) on the shortcut                       Fig. 2(f)
    bn_after_add            conv-BN-ReLU-conv, + x, BN, ReLU                   Fig. 4(b)
    relu_before_add         conv-BN-ReLU-conv-BN-ReLU, + x                     Fig. 4(c)
    relu_preact             ReLU-conv-BN-ReLU-conv-BN, + x                     Fig. 4(d), ReLU-only pre-activation
    preact                  BN-ReLU-conv-BN-ReLU-conv, + x                     Fig. 4(e), full pre-activation

The network is the paper's CIFAR ResNet on a 28x28 picture: a 3x3 stem convolution (stride 2: 14x14), then three
stages of n units at width w, 2w and 4w on 14x14, 7x7 and 4x4 maps (the first unit of the second and third stage
halves the map, its shortcut a strided 1x1 convolution), then global average pooling and a linear layer: depth
6n + 2 weighted layers, as ResNet-20/56/110 count them. The stem's stride 2 is ours: the paper's 32x32 stage becomes
14x14, which cuts the work 4x and keeps a 56-layer study within a CPU's reach. A pre-activation network ends with
the batch norm and ReLU that its last unit leaves out, as the paper's does.

Every variant is registered as `res_<variant>` and takes its depth and width as its design (`--block
'depth=56,width=16'`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.blocks import SkipBlock
from cnnlab.models.registry import register_model

DEPTHS = (8, 200)  # 6n + 2 from n = 1 up to 33 units a stage
WIDTHS = (1, 64)  # channels of the first stage
DEFAULT_DEPTH, DEFAULT_WIDTH = 20, 16  # ResNet-20's depth and width: cheap enough to train in the tests
ORDERS = ("lecture", "original", "bn_after_add", "relu_before_add", "relu_preact", "preact")
SHORTCUTS = ("identity", "scaling", "gating", "shortcut_gating", "conv", "dropout")


@dataclass(frozen=True)
class Variant:
    """One residual unit of the paper: where its batch norm and ReLU are, and what its shortcut does."""

    name: str  # the variant's name ("preact"); registered as res_<name>
    order: str  # one of ORDERS: the residual function's layers and what follows the sum
    shortcut: str  # one of SHORTCUTS
    figure: str  # where the paper draws it ("Fig. 4(e)")
    unit: str  # the unit in one line
    # A gate's initial bias b_g, g = sigmoid(W_g x + b_g): the paper's row for the unit (Table 1). Exclusive gating
    # trains only from b_g = -6 (g ~ 0.0025: the shortcut almost whole, F almost shut), 8.70%; shortcut-only gating
    # from b_g = 0 (the shortcut halved at first) gives 12.86%, the row whose question is the multiplicative shortcut.
    gate_bias: float = 0.0


VARIANTS = {v.name: v for v in (
    Variant("lecture", "lecture", "identity", "the lecture", "conv-ReLU-conv, + x, ReLU (no batch norm)"),
    Variant("original", "original", "identity", "Fig. 2(a), 4(a)", "conv-BN-ReLU-conv-BN, + x, ReLU"),
    Variant("scaling", "original", "scaling", "Fig. 2(b)", "0.5 x shortcut + 0.5 x F, then ReLU"),
    Variant("gating", "original", "gating", "Fig. 2(c)", "(1 - g) x shortcut + g x F, g = sigmoid(1x1 conv), b_g = -6",
            gate_bias=-6.0),
    Variant("shortcut_gating", "original", "shortcut_gating", "Fig. 2(d)", "(1 - g) x shortcut + F, b_g = 0"),
    Variant("conv_shortcut", "original", "conv", "Fig. 2(e)", "1x1 conv + BN on every shortcut"),
    Variant("dropout_shortcut", "original", "dropout", "Fig. 2(f)", "dropout 0.5 on the shortcut"),
    Variant("bn_after_add", "bn_after_add", "identity", "Fig. 4(b)", "conv-BN-ReLU-conv, + x, BN, ReLU"),
    Variant("relu_before_add", "relu_before_add", "identity", "Fig. 4(c)", "conv-BN-ReLU-conv-BN-ReLU, + x"),
    Variant("relu_preact", "relu_preact", "identity", "Fig. 4(d)", "ReLU-conv-BN-ReLU-conv-BN, + x"),
    Variant("preact", "preact", "identity", "Fig. 4(e)", "BN-ReLU-conv-BN-ReLU-conv, + x"),
)}


# ---- the design: depth and width -----------------------------------------------------------------------------

def parse(block: str) -> tuple[int, int]:
    """(depth, width) from a design such as "depth=56,width=16" ("" or a key left out: the default). A ValueError
    of one line names what is wrong."""
    depth, width = DEFAULT_DEPTH, DEFAULT_WIDTH
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in block.split(","))):
        m = re.fullmatch(r"(depth|width)\s*=\s*(\d{1,4})", part)
        if not m:
            raise ValueError(f"cannot read {part[:40]!r}: a residual family's design is 'depth=N,width=W', "
                             f"e.g. 'depth={DEFAULT_DEPTH},width={DEFAULT_WIDTH}'")
        key, value = m.group(1), int(m.group(2))
        if key in seen:
            raise ValueError(f"{key} is given twice")
        seen.add(key)
        if key == "depth":
            if not DEPTHS[0] <= value <= DEPTHS[1] or (value - 2) % 6:
                raise ValueError(f"depth {value} is not 6n + 2 from {DEPTHS[0]} to {DEPTHS[1]} (3 stages of n units of "
                                 f"two convolutions, a stem and a linear layer): e.g. 20, 32, 44, 56, 110")
            depth = value
        else:
            if not WIDTHS[0] <= value <= WIDTHS[1]:
                raise ValueError(f"width {value} is out of range; choose a whole number from {WIDTHS[0]} to {WIDTHS[1]}")
            width = value
    return depth, width


def canonical(block: str) -> str:
    """The design as a run records it: "depth=D,width=W" (the registry's `design` fact)."""
    depth, width = parse(block)
    return f"depth={depth},width={width}"


# ---- the unit -------------------------------------------------------------------------------------------------

def _conv3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class ResidualUnit(SkipBlock):
    """One unit of the family: y = h(x) + F(x), out = f(y), as `variant` places its layers.

    Args:
        in_channels, out_channels: channels in and out.
        stride: 2 halves the map; the shortcut is then a strided 1x1 convolution (also where channels change).
        variant: the unit (VARIANTS).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, variant: Variant) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.variant = variant
        order, bn = variant.order, variant.order != "lecture"
        c_in, c = in_channels, out_channels
        # The residual function's layers, in the order they run.
        if order == "lecture":
            layers = [_conv3(c_in, c, stride, bias=True), nn.ReLU(), _conv3(c, c, bias=True)]
        elif order == "original":
            layers = [_conv3(c_in, c, stride), nn.BatchNorm2d(c), nn.ReLU(), _conv3(c, c), nn.BatchNorm2d(c)]
        elif order == "bn_after_add":
            layers = [_conv3(c_in, c, stride), nn.BatchNorm2d(c), nn.ReLU(), _conv3(c, c)]
        elif order == "relu_before_add":
            layers = [_conv3(c_in, c, stride), nn.BatchNorm2d(c), nn.ReLU(), _conv3(c, c), nn.BatchNorm2d(c), nn.ReLU()]
        elif order == "relu_preact":
            layers = [nn.ReLU(), _conv3(c_in, c, stride), nn.BatchNorm2d(c), nn.ReLU(), _conv3(c, c), nn.BatchNorm2d(c)]
        elif order == "preact":
            layers = [nn.BatchNorm2d(c_in), nn.ReLU(), _conv3(c_in, c, stride), nn.BatchNorm2d(c), nn.ReLU(), _conv3(c, c)]
        else:
            raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
        self.residual = nn.Sequential(*layers)
        # What follows the sum: BN and ReLU (BN after addition), a ReLU (the original unit, the lecture's), or nothing.
        self.post = (nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) if order == "bn_after_add"
                     else nn.ReLU() if order in ("lecture", "original") else nn.Identity())
        # The shortcut: the identity where the shapes allow, else (and in the conv-shortcut unit always) a 1x1 conv,
        # with batch norm where the residual function ends in one, so that the two added paths are on one scale.
        project = stride != 1 or c_in != c or variant.shortcut == "conv"
        ends_in_bn = isinstance(layers[-1], nn.BatchNorm2d) or (order == "relu_before_add")
        self.shortcut: nn.Module = nn.Identity()
        if project:
            conv = nn.Conv2d(c_in, c, 1, stride=stride, bias=not bn)
            self.shortcut = nn.Sequential(conv, nn.BatchNorm2d(c)) if bn and ends_in_bn else conv
        self.gate: nn.Conv2d | None = None
        if variant.shortcut in ("gating", "shortcut_gating"):  # g(x) = sigmoid(1x1 conv of the unit's input)
            self.gate = nn.Conv2d(c_in, c, 1, stride=stride)
            nn.init.constant_(self.gate.bias, variant.gate_bias)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = self.shortcut(x)
        out = self.residual(x)
        kind = self.variant.shortcut
        if kind == "scaling":
            identity, out = identity * 0.5, out * 0.5
        elif kind == "gating":
            g = torch.sigmoid(self.gate(x))
            identity, out = identity * (1 - g), out * g
        elif kind == "shortcut_gating":
            identity = identity * (1 - torch.sigmoid(self.gate(x)))
        elif kind == "dropout":
            identity = F.dropout(identity, 0.5, self.training)
        return identity, out  # forward: after(out + identity)

    def after(self, y: torch.Tensor) -> torch.Tensor:
        return self.post(y)


# ---- the network ----------------------------------------------------------------------------------------------

class DeepResNet(nn.Module):
    """Stem (3x3 conv, stride 2), three stages of n = (depth - 2) / 6 units at width w, 2w, 4w, global average
    pooling, linear. 28x28: w x 14 x 14 -> 2w x 7 x 7 -> 4w x 4 x 4 -> pool -> linear.

    Args:
        variant: the unit (VARIANTS).
        depth: 6n + 2 weighted layers.
        width: channels of the first stage.
        in_channels, num_classes, image_size: the data's.
    """

    MIN_IMAGE_SIZE = 8

    def __init__(self, variant: Variant, depth: int = DEFAULT_DEPTH, width: int = DEFAULT_WIDTH, in_channels: int = 1,
                 num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or image_size < self.MIN_IMAGE_SIZE:
            raise ValueError(f"need in_channels >= 1, num_classes >= 2, image_size >= {self.MIN_IMAGE_SIZE}; "
                             f"got {in_channels}, {num_classes}, {image_size}")
        canonical(f"depth={depth},width={width}")  # the same checks as a design's
        self.variant, self.depth, self.width = variant, depth, width
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        bn, pre = variant.order != "lecture", variant.order in ("preact", "relu_preact")
        stem: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=not bn)]
        if not pre:  # a pre-activation unit begins with its own activation (and the full one, its BN)
            stem += [nn.BatchNorm2d(width), nn.ReLU()] if bn else [nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        n = (depth - 2) // 6
        units, c = [], width
        for k, w in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                units.append(ResidualUnit(c, w, 2 if k and not i else 1, variant))
                c = w
        self.units = nn.Sequential(*units)
        # The pre-activation network's last unit ends on a convolution (or a BN): BN and ReLU before pooling.
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) if variant.order == "preact" else \
            nn.ReLU() if variant.order == "relu_preact" else nn.Identity()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x w x 14 x 14
        x = self.head(self.units(x))  # N x 4w x 4 x 4
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _builder(variant: Variant):
    def build(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, block: str = "") -> DeepResNet:
        depth, width = parse(block)
        return DeepResNet(variant, depth, width, in_channels, num_classes, image_size)

    build.__name__ = build.__qualname__ = f"res_{variant.name}"
    build.__doc__ = f"Deep residual family, {variant.figure}: {variant.unit} (--block 'depth=D,width=W')."
    return build


for _variant in VARIANTS.values():
    register_model(_builder(_variant), epochs=6, design=canonical, family="identity-mappings")
