"""The network of a block a student designs: its spec read and written, bad designs refused with a code and a clear
line, the lecture's two networks reproduced as designs, shapes for any design, and the design kept by a run."""

from __future__ import annotations

import random
import re

import pytest
import torch

from cnnlab.config import TrainConfig, make_spec
from cnnlab.models import (
    BranchedBlock, Design, DesignError, SkipBlock, count_parameters, create_model, get_model, parts,
)
from cnnlab.models.designed import BRANCHES, LECTURE, LECTURE_MODELS, WIDTHS, PlainBlock

CANONICAL = [
    LECTURE["inception"],
    LECTURE["residual"],
    "residual:16,noskip",
    "residual:1,skip",
    "inception:1x1=3",
    "inception:5x5=24",
    "inception:5x5=4>24,pool=8",
    "inception:3x3dbl=5>6,pool=64",
    "inception:1x1=1,5x5=1>1,3x3dbl=1>1>1,pool=1",
]


@pytest.mark.parametrize("spec", CANONICAL)
def test_a_canonical_spec_is_read_and_written_back_as_it_was(spec):
    design = Design.parse(spec)
    assert design.spec == str(design) == spec
    assert Design.parse(design.spec) == design


def test_a_spec_is_read_whatever_its_spaces_case_and_branch_order():
    design = Design.parse(" Inception: pool=8 , 5x5 = 4>24 ")
    assert design.spec == "inception:5x5=4>24,pool=8"
    assert design.branches == (("5x5", (4, 24)), ("pool", (8,)))
    assert Design.parse("RESIDUAL:8,NoSkip") == Design("residual", width=8, skip=False)


BAD = {
    "empty": ("", "design.kind", "unknown block kind ''"),
    "another kind": ("dense:3", "design.kind", "start with inception: or residual:"),
    "no branch": ("inception:", "design.no_branch", "at least one branch"),
    "kind alone": ("inception", "design.no_branch", "at least one branch"),
    "unknown branch": ("inception:7x7=3", "design.branch", "unknown branch '7x7'; choose from 1x1, 5x5, 3x3dbl, pool"),
    "branch twice": ("inception:1x1=4,1x1=5", "design.repeated", "branch 1x1 is given twice"),
    "branch without widths": ("inception:5x5", "design.syntax", "write a branch as NAME=WIDTH"),
    "empty item": ("inception:1x1=4,", "design.syntax", "cannot read ''"),
    "three widths for a 5x5": ("inception:5x5=1>2>3", "design.widths", "branch 5x5 takes 1 or 2 width(s)"),
    "a reduction for the 1x1": ("inception:1x1=4>8", "design.widths", "branch 1x1 takes 1 width(s)"),
    "one width for the double 3x3": ("inception:3x3dbl=8", "design.widths", "branch 3x3dbl takes 2 or 3 width(s)"),
    "width 0": ("inception:pool=0", "design.width", "pool: width 0 is out of range; choose a whole number from 1 to 64"),
    "width 65": ("inception:5x5=65>8", "design.width", "width 65 is out of range"),
    "a width not a number": ("inception:1x1=ten", "design.width", "'ten' is not a width"),
    "a negative width": ("inception:1x1=-3", "design.width", "'-3' is not a width"),
    "a huge width": ("residual:" + "9" * 40 + ",skip", "design.width", "is not a width"),
    "residual without skip word": ("residual:16", "design.skip", "residual:WIDTH,skip or residual:WIDTH,noskip"),
    "residual width 0": ("residual:0,skip", "design.width", "residual: width 0 is out of range"),
    "residual width 65": ("residual:65,noskip", "design.width", "from 1 to 64"),
    "too long": ("inception:" + "1x1=4," * 40, "design.syntax", "at most 200 characters"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_design_is_refused_with_its_code_and_a_clear_line(name):
    spec, code, words = BAD[name]
    with pytest.raises(DesignError) as caught:
        Design.parse(spec)
    assert caught.value.code == code and words in str(caught.value), str(caught.value)
    assert set(caught.value.params) == set(DesignError.CODES[code])
    assert isinstance(caught.value, ValueError)  # the command line's one line, the builder's refusal
    if spec:  # "" is the default design to the builder
        with pytest.raises(DesignError, match=re.escape(str(caught.value))):
            create_model("designed", block=spec)


def test_a_design_made_directly_is_checked_as_a_parsed_one():
    with pytest.raises(DesignError, match="at least one branch"):
        Design("inception")
    with pytest.raises(DesignError, match="out of range"):
        Design("residual", width=WIDTHS[1] + 1)
    with pytest.raises(DesignError, match="out of range"):
        Design("inception", branches=(("1x1", (True,)),))  # a bool is no width
    with pytest.raises(DesignError, match="unknown block kind"):
        Design("dense", width=3)


@pytest.mark.parametrize("kind", ["inception", "residual"])
def test_the_lecture_designs_are_the_lecture_networks(kind):
    """Same parameter count (97,298 and 41,514 on MNIST), the same modules under the same names, and with the lecture
    network's weights the same outputs: the design is the lecture's network, not a look-alike."""
    lecture = create_model(LECTURE_MODELS[kind])
    mine = create_model("designed", block=LECTURE[kind])
    assert count_parameters(mine) == count_parameters(lecture) == {"inception": 97_298, "residual": 41_514}[kind]
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(mine) == shapes(lecture)
    mine.load_state_dict(lecture.state_dict())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(mine(x), lecture(x))


def test_without_its_skip_the_residual_design_trains_the_same_parameters():
    skip, plain = create_model("designed", block="residual:16,skip"), create_model("designed", block="residual:16,noskip")
    assert count_parameters(plain) == count_parameters(skip) == 41_514
    assert isinstance(plain.block1, PlainBlock) and not isinstance(plain.block1, SkipBlock)
    with torch.no_grad():  # with the same weights, the plain block is the residual block less its identity
        plain.load_state_dict({k.replace("rblock", "block"): v for k, v in skip.state_dict().items()})
        x = torch.randn(2, 16, 12, 12)
        assert torch.equal(plain.block1(x), torch.relu(skip.rblock1.paths(x)[1]))


def test_a_small_design_has_the_parameters_counted_by_hand():
    # inception:1x1=2 on MNIST: conv1 1->10 5x5; incep1 1x1 10->2; conv2 2->20 5x5; incep2 1x1 20->2; fc 2*4*4 -> 10
    by_hand = (1 * 25 * 10 + 10) + (10 * 2 + 2) + (2 * 25 * 20 + 20) + (20 * 2 + 2) + (2 * 4 * 4 * 10 + 10)
    assert by_hand == 1_674 == count_parameters(create_model("designed", block="inception:1x1=2"))
    # residual:4,noskip: conv1 1->4 5x5; two 3x3 4->4; conv2 4->8 5x5; two 3x3 8->8; fc 8*4*4 -> 10
    by_hand = (25 * 4 + 4) + 2 * (4 * 9 * 4 + 4) + (4 * 25 * 8 + 8) + 2 * (8 * 9 * 8 + 8) + (8 * 16 * 10 + 10)
    assert by_hand == 3_666 == count_parameters(create_model("designed", block="residual:4,noskip"))


def _random_design(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"residual:{rng.randint(*WIDTHS)},{rng.choice(['skip', 'noskip'])}"
    chosen = rng.sample(list(BRANCHES), rng.randint(1, len(BRANCHES)))
    items = []
    for name in chosen:
        counts = {"1x1": (1,), "5x5": (1, 2), "3x3dbl": (2, 3), "pool": (1,)}[name]
        widths = [rng.randint(1, 32) for _ in range(rng.choice(counts))]
        items.append(f"{name}={'>'.join(map(str, widths))}")
    return "inception:" + ",".join(items)


SINGLE_BRANCHES = [f"inception:{name}=3" if name in ("1x1", "pool") else f"inception:{name}={'5>' if name == '3x3dbl' else ''}3"
                   for name in BRANCHES]


@pytest.mark.parametrize("spec", [_random_design(random.Random(seed)) for seed in range(12)] + SINGLE_BRANCHES
                         + ["residual:5,noskip", "residual:3,skip"])
def test_any_design_gives_logits_of_the_right_shape_and_parts_of_its_blocks(spec):
    torch.manual_seed(0)
    design = Design.parse(spec)
    model = create_model("designed", block=spec)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    assert create_model("designed", block=spec, in_channels=3, num_classes=7, image_size=32)(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    names = [p.name for p in parts(model)]  # what the inside view lists and switches
    if design.kind == "inception":
        chosen = [name for name, _ in design.branches]
        assert names == [f"{block}.{b}" for block in ("incep1", "incep2") for b in chosen]
        block = model.incep1
        assert isinstance(block, BranchedBlock) and block.out_channels == sum(w[-1] for _, w in design.branches)
        x = torch.randn(2, 10, 12, 12)
        assert torch.equal(block(x), torch.cat(block.branches(x), 1))
    elif design.skip:
        assert names == ["rblock1.skip", "rblock1.conv", "rblock2.skip", "rblock2.conv"]
    else:
        assert names == []  # a plain block has no skip to switch off


def test_a_design_is_refused_for_a_model_that_takes_none_and_recorded_canonically_for_one_that_does():
    with pytest.raises(ValueError, match="model 'resnet' takes no block design .*cnnlab models lists them"):
        create_model("resnet", block="residual:16,skip")
    with pytest.raises(ValueError, match="takes no block design"):
        make_spec("inception_net", block=LECTURE["inception"])
    assert make_spec("resnet").config.block == ""
    assert make_spec("designed").config.block == LECTURE["inception"]  # the default, recorded as it is
    assert make_spec("designed", block="inception: pool=8,1x1=4").config.block == "inception:1x1=4,pool=8"
    assert get_model("designed").design is not None and get_model("resnet").design is None
    with pytest.raises(DesignError):
        make_spec("designed", block="inception:1x1=0")


def test_the_design_travels_with_the_trained_model(tmp_path):
    """Trained a few steps, saved, loaded: the same design, the same weights; its record altered to another design,
    the checkpoint is refused rather than loaded into a network it does not fit."""
    from cnnlab.runs import Checkpoint, CheckpointError, load
    from cnnlab.train import fit, make_config

    from ..support.data import synthetic_mnist

    spec = "inception:5x5=4>6,pool=3"
    cfg = make_config("designed", block=spec, steps=2, batch_size=50, val_size=50, device="cpu")
    run = fit(cfg, synthetic_mnist(train=200, test=50, seed=0), out_root=tmp_path, progress=False).run_dir
    trained = load(run)
    assert trained.config.block == spec and trained.describe()["block"] == spec
    assert trained.network.incep1.branch_names == ("5x5", "pool")
    record = Checkpoint.read(run / "best.pt")
    assert all(torch.equal(v, record.model_state[k]) for k, v in trained.network.state_dict().items())

    record.config = {**record.config, "block": "inception:5x5=4>7,pool=3"}
    record.save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="designed"):
        load(tmp_path / "other.pt")
    record.config = {**record.config, "block": "inception:9x9=3"}
    record.save(tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="cannot be built as recorded.*unknown branch"):
        load(tmp_path / "broken.pt")


def test_a_checkpoint_from_before_designs_loads(tiny_run, tmp_path):
    from cnnlab.runs import Checkpoint, load

    record = Checkpoint.read(tiny_run / "best.pt")
    record.config = {k: v for k, v in record.config.items() if k != "block"}
    record.save(tmp_path / "old.pt")
    trained = load(tmp_path / "old.pt")
    assert trained.config.block == "" and "block" not in Checkpoint.read(tmp_path / "old.pt").config
    assert TrainConfig.from_dict({"model": "resnet"}).block == ""


def test_the_command_line_takes_a_design_for_the_model_that_takes_one(capsys):
    from ..support.cli import run_cli

    with pytest.raises(SystemExit) as exited:  # a usage error: before anything is loaded
        run_cli(capsys, "train", "--model", "designed", "--block", "inception:1x1=99", "--device", "cpu")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "argument --block: 1x1: width 99 is out of range; choose a whole number from 1 to 64" in err
    code, _, err = run_cli(capsys, "train", "--model", "resnet", "--block", "residual:8,skip", "--device", "cpu")
    assert code == 1 and err.strip().splitlines() == [
        "cnnlab train: error: model 'resnet' takes no block design (--block); densenet_bc, res_lecture and 11 more "
        "(cnnlab models lists them) do"]
    with pytest.raises(SystemExit):
        run_cli(capsys, "train", "--help")
    out = capsys.readouterr().out
    assert "--block SPEC" in out and "default: the lecture's Inception block" in " ".join(out.split())
