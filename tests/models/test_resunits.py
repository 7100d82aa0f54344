"""The identity-mappings family of residual units: counts by hand, what each unit computes, and that each trains."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.models import count_parameters, create_model, get_model, list_models, switched_off
from cnnlab.models.resunits import VARIANTS, ResidualUnit, canonical
from cnnlab.models.stages import stage_lines


def _conv(c_in, c_out, k=3, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def _bn(c):
    return 2 * c  # weight and bias; the running statistics are buffers


def _hand_count(variant: str) -> int:
    """Depth 8 (one unit a stage), width 4: a 1-channel 28x28 picture, 10 classes; counted layer by layer."""
    fc = 16 * 10 + 10
    if variant == "lecture":  # no batch norm: every convolution has its bias
        stem = _conv(1, 4, bias=True)
        s1 = 2 * _conv(4, 4, bias=True)
        s2 = _conv(4, 8, bias=True) + _conv(8, 8, bias=True) + _conv(4, 8, 1, bias=True)
        s3 = _conv(8, 16, bias=True) + _conv(16, 16, bias=True) + _conv(8, 16, 1, bias=True)
        return stem + s1 + s2 + s3 + fc
    pre = variant in ("preact", "relu_preact")
    stem = _conv(1, 4) + (0 if pre else _bn(4))
    convs = 2 * _conv(4, 4) + _conv(4, 8) + _conv(8, 8) + _conv(8, 16) + _conv(16, 16)
    if variant == "preact":  # BN before each convolution: of the unit's input, then of its middle
        bns = _bn(4) + _bn(4) + _bn(4) + _bn(8) + _bn(8) + _bn(16)
    else:  # two per unit, of the unit's width (BN after addition: one in F, one after the sum)
        bns = 2 * (_bn(4) + _bn(8) + _bn(16))
    # The projections where the map halves: a 1x1 conv, with BN where the residual function ends in one.
    proj_bn = variant not in ("preact", "bn_after_add")
    proj = _conv(4, 8, 1) + _conv(8, 16, 1) + ((_bn(8) + _bn(16)) if proj_bn else 0)
    extra = 0
    if variant == "conv_shortcut":  # the first stage's shortcut is a 1x1 conv + BN too
        extra = _conv(4, 4, 1) + _bn(4)
    if variant in ("gating", "shortcut_gating"):  # g = sigmoid(1x1 conv with bias of the unit's input)
        extra = _conv(4, 4, 1, bias=True) + _conv(4, 8, 1, bias=True) + _conv(8, 16, 1, bias=True)
    head = _bn(16) if variant == "preact" else 0  # the BN a pre-activation network ends with
    return stem + convs + bns + proj + extra + head + fc


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameter_count_of_each_unit_matches_a_count_by_hand(variant):
    assert count_parameters(create_model(f"res_{variant}", block="depth=8,width=4")) == _hand_count(variant)


def test_every_variant_is_registered_in_its_family_with_depth_and_width():
    names = [n for n in list_models() if get_model(n).family == "identity-mappings"]
    assert names == [f"res_{v}" for v in VARIANTS]
    for n in names:
        assert get_model(n).check_block("") == "depth=20,width=16"
        assert len(create_model(n, block="depth=32,width=8").units) == 15


@pytest.mark.parametrize("spec, message", [
    ("depth=21", r"6n \+ 2"), ("depth=2", r"6n \+ 2"), ("width=0", "out of range"), ("width=65", "out of range"),
    ("depth=20,depth=26", "twice"), ("height=3", "cannot read"), ("depth=x", "cannot read"),
])
def test_a_bad_design_is_one_clear_line(spec, message):
    with pytest.raises(ValueError, match=message):
        canonical(spec)


def test_the_design_is_canonical():
    assert canonical("") == "depth=20,width=16"
    assert canonical(" width=8 , depth=56") == "depth=56,width=8"


def _unit(variant, c=4):
    torch.manual_seed(0)
    return ResidualUnit(c, c, 1, VARIANTS[variant]).eval()


def test_each_unit_computes_what_the_paper_draws():
    x = torch.randn(2, 4, 6, 6)
    u = _unit("preact")  # x + F(x): nothing after the sum
    assert torch.allclose(u(x), x + u.residual(x), atol=1e-6)
    u = _unit("original")  # relu(x + F(x))
    assert torch.allclose(u(x), F.relu(x + u.residual(x)), atol=1e-6)
    u = _unit("scaling")
    assert torch.allclose(u(x), F.relu(0.5 * x + 0.5 * u.residual(x)), atol=1e-6)
    u = _unit("bn_after_add")
    assert torch.allclose(u(x), u.post(x + u.residual(x)), atol=1e-6) and isinstance(u.post[0], torch.nn.BatchNorm2d)
    u = _unit("gating")  # b_g = -6: the gate almost shut on F, the shortcut almost whole
    g = torch.sigmoid(u.gate(x))
    assert torch.allclose(u(x), F.relu((1 - g) * x + g * u.residual(x)), atol=1e-6)
    assert 0 < g.mean() < 0.01
    u = _unit("shortcut_gating")
    g = torch.sigmoid(u.gate(x))
    assert torch.allclose(u(x), F.relu((1 - g) * x + u.residual(x)), atol=1e-6)
    u = _unit("relu_before_add")  # F ends in a ReLU: the sum only grows
    assert (u(x) >= x - 1e-6).all()
    u = _unit("dropout_shortcut").train()
    skip, _ = u.paths(x)  # each value dropped or kept at twice its size (inverted dropout at 0.5)
    dropped, kept = skip == 0, torch.isclose(skip, 2 * x)
    assert (dropped | kept).all() and dropped.any() and kept.any()
    assert torch.equal(u.eval().paths(x)[0], x)  # in evaluation the identity


def test_switching_the_conv_path_off_a_preactivation_unit_leaves_its_input():
    model = create_model("res_preact", block="depth=8,width=4").eval()
    x = torch.randn(1, 4, 14, 14)
    with switched_off(model, "units.0.conv"):
        out = model.units[0](x)  # the switch's hook gives what the unit passes on
    assert torch.equal(out, x)  # no ReLU after the sum of a pre-activation unit
    with switched_off(model, "units.0.skip"):
        assert torch.equal(model.units[0](x), model.units[0].residual(x))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_learns_a_fixed_batch(variant):
    torch.manual_seed(0)
    model = create_model(f"res_{variant}", block="depth=8,width=4")
    y = torch.arange(32) % 10
    x = 0.5 * torch.randn(32, 1, 28, 28) + 0.3 * y.view(-1, 1, 1, 1)  # a class is a brightness: learnable in a few steps
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # one rate that starts every unit, with BN or without
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.6 * losses[0]


def test_the_inside_view_shows_a_gate_a_scaling_and_a_convolved_shortcut():
    def unit_lines(variant):
        lines = stage_lines(create_model(f"res_{variant}", block="depth=8,width=4").eval())
        start = next(i for i, ln in enumerate(lines) if ln.startswith("units.0 "))
        end = next(i for i, ln in enumerate(lines) if ln.startswith("units.1 "))
        return "\n".join(lines[start:end])

    gated = unit_lines("gating")
    assert "sigmoid" in gated and "1 − g" in gated and "x · g" in gated
    assert "skip: scale1" in unit_lines("scaling") and "x · 0.5" in unit_lines("scaling")
    assert "skip: shortcut.0     1×1 convolution" in unit_lines("conv_shortcut")
    assert "post" not in unit_lines("preact") and "post" in unit_lines("original")
