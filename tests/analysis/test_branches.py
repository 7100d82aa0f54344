"""Branch analysis on the real model: silencing by hooks, energy shares, recorded gradient shares."""

import json

import pytest
import torch

from cnnlab.analysis.branches import ablate, branch_energy, gradient_shares, silenced
from cnnlab.models import branched_blocks, create_model, models_with_branches
from cnnlab.train import make_config
from cnnlab.runs.forward import evaluate, predict_logits
from cnnlab.train.gradients import GradNormRecorder, inception_branch_groups


def _model():
    torch.manual_seed(0)
    return create_model("inception_net").eval()


def test_silencing_every_branch_leaves_only_what_the_bias_path_gives():
    model = _model()
    x1, x2 = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    everything = {"incep1": {"1x1", "5x5", "3x3dbl", "pool"}}
    with torch.no_grad(), silenced(model, everything):
        a, b = model(x1), model(x2)
    assert torch.equal(a, b)  # the input no longer reaches the output
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("conv2.", "incep2.", "fc.")) and name.endswith("bias"):
                p.zero_()
        with silenced(model, everything):
            assert torch.count_nonzero(model(x1)) == 0  # and what remains came from the biases after the block
        assert torch.count_nonzero(model(x1)) > 0  # the hook is gone after the context


def test_silencing_one_branch_zeroes_exactly_its_channels():
    model = _model()
    with torch.no_grad(), silenced(model, {"incep2": {"5x5"}}):
        out = model.incep2(torch.randn(2, 20, 4, 4))
    assert torch.count_nonzero(out[:, 16:40]) == 0  # the 5x5 branch: channels 16..39 of 88
    assert torch.count_nonzero(out[:, :16]) > 0 and torch.count_nonzero(out[:, 40:]) > 0
    with pytest.raises(ValueError, match="unknown branch"):
        with silenced(model, {"incep1": {"7x7"}}):
            pass


@pytest.mark.parametrize("name", models_with_branches())
def test_energy_shares_sum_to_one_per_block(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    shares = branch_energy(model, images, make_config(name, channels_last=False))
    blocks = branched_blocks(model)
    assert set(shares) == {f"{b}.{n}" for b, block in blocks.items() for n in block.branch_names}
    for block in blocks:
        assert sum(v for k, v in shares.items() if k.startswith(block + ".")) == pytest.approx(1.0)


@pytest.mark.parametrize("name", models_with_branches())
def test_silencing_any_branch_of_any_model_zeroes_exactly_its_channels(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    outputs = {}

    def keep(name):
        def hook(module, args, out):  # returns None: a forward hook's return value would replace the output
            outputs[name] = (args[0], out)

        return hook

    hooks = [b.register_forward_hook(keep(n)) for n, b in branched_blocks(model).items()]
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    for block_name, block in branched_blocks(model).items():
        x, full = outputs[block_name]
        for branch, channels in block.branch_slices().items():
            with torch.no_grad(), silenced(model, {block_name: {branch}}):
                out = block(x)
            expected = full.clone()
            expected[:, channels] = 0
            assert torch.count_nonzero(full[:, channels]) > 0, (block_name, branch)  # so the zeros are the hook's
            assert torch.equal(out, expected), (block_name, branch)


def _slow_ablation(model, images, labels, cfg):
    """Every branch silenced, and kept alone, each by a whole evaluation of the silenced model."""
    without, only = {}, {}
    for b, block in branched_blocks(model).items():
        for n in block.branch_names:
            with silenced(model, {b: {n}}):
                without[f"{b}.{n}"] = evaluate(model, images, labels, cfg)[1]
            with silenced(model, {b: set(block.branch_names) - {n}}):
                only[f"{b}.{n}"] = evaluate(model, images, labels, cfg)[1]
    return evaluate(model, images, labels, cfg)[1], without, only


class _Untraceable(torch.nn.Module):
    """A network whose forward branches on a tensor's value, which torch.fx cannot trace."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) if x.sum() > -1e30 else -self.net(x)


@pytest.mark.parametrize("mirror", [False, True], ids=["plain", "mirror-averaged"])
@pytest.mark.parametrize("name", models_with_branches())
def test_ablation_in_one_pass_gives_every_accuracy_and_share_that_whole_evaluations_give(name, mirror):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():  # BN statistics of a trained net's size: the random net's outputs then differ by image
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(0.1)
    images = torch.randint(0, 256, (48, 28, 28), dtype=torch.uint8)
    cfg = make_config(name, eval_batch_size=20, tta_hflip=mirror)  # batches of 20, 20 and 8
    labels = predict_logits(model, images, cfg).argmax(1)  # the model's own answers: 100% until a branch is silenced
    done = []
    fast = ablate(model, images, labels, cfg, step=done.append)
    assert done == [20, 20, 8]
    base, without, only = _slow_ablation(model, images, labels, cfg)
    assert (fast.accuracy, fast.without, fast.only) == (base, without, only)  # the same values, to the bit
    assert fast.energy == branch_energy(model, images, cfg)
    assert base == 1.0 and min(only.values()) < 1.0  # silencing changes what the model answers


def test_a_network_fx_cannot_trace_is_ablated_by_whole_forwards_with_the_same_results():
    torch.manual_seed(0)
    model = _Untraceable(create_model("inception_net")).eval()
    images, labels = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (30,))
    cfg = make_config("inception_net", eval_batch_size=16)
    fast = ablate(model, images, labels, cfg)
    base, without, only = _slow_ablation(model, images, labels, cfg)
    assert (fast.accuracy, fast.without, fast.only) == (base, without, only)
    assert set(without) == {f"net.incep{i}.{n}" for i in (1, 2) for n in ("1x1", "5x5", "3x3dbl", "pool")}


@pytest.mark.parametrize("name", models_with_branches())
def test_branch_groups_hold_every_parameter_of_every_branch_once_and_record_their_gradients(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    groups = inception_branch_groups(model)
    blocks = branched_blocks(model)
    assert set(groups) == {f"{b}.{n}" for b, block in blocks.items() for n in block.branch_names}
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for block in blocks.values() for p in block.parameters()}
    recorder = GradNormRecorder(groups)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    recorder.step()
    for group, params in groups.items():
        assert recorder.last[group] == pytest.approx(sum(float(p.grad.pow(2).sum()) for p in params), rel=1e-5)
        assert recorder.last[group] > 0 or not params, group  # a dense layer's "given" has no parameters
    recorder.close()


def test_inception_net_keeps_its_branch_groups():
    groups = inception_branch_groups(_model())
    assert list(groups) == [f"{b}.{n}" for b in ("incep1", "incep2") for n in ("1x1", "5x5", "3x3dbl", "pool")]
    assert [len(p) for p in groups.values()][:4] == [2, 4, 6, 2]  # weight and bias of each of the branch's convolutions


def test_gradient_shares_from_a_run_file(tmp_path):
    (tmp_path / "branch_grads.json").write_text(json.dumps({"epochs": [
        {"epoch": 1, "steps": 10, "mean_squared_norm": {"b.1x1": 1.0, "b.5x5": 3.0}},
        {"epoch": 2, "steps": 30, "mean_squared_norm": {"b.1x1": 1.0, "b.5x5": 1.0}},
    ]}))
    shares = gradient_shares(tmp_path)
    assert shares["b.1x1"] == pytest.approx(40 / 100) and shares["b.5x5"] == pytest.approx(60 / 100)
    assert gradient_shares(tmp_path / "nothing") is None


def test_checkpoints_of_different_models_are_not_averaged_together():
    from cnnlab.analysis.branches import BranchReport, summarise

    row = dict(block="incep1", branch="1x1", acc_without=0.5, acc_only=0.5, energy_share=0.25, grad_share=None)
    reports = [BranchReport("a.pt", "inception_net", 0, 0.9, [row]), BranchReport("b.pt", "inception_bn", 0, 0.9, [row])]
    with pytest.raises(ValueError, match="different models \\(inception_net, inception_bn\\)"):
        summarise(reports)
    assert summarise(reports[:1])[0]["acc_without"] == (0.5, 0.5, 0.5)


def test_inception_bn_records_branch_gradients_and_analyze_branches_gives_its_table(tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.data import load_data
    from cnnlab.train import fit

    from ..support.data import draw_folder

    # A few steps on a small folder of drawn shapes: the mechanics of recording and analysing, not what the
    # branches learn. The analysis then reads the data the run names (the folder, its split) as `cnnlab analyze` does.
    root = draw_folder(tmp_path / "shapes", per_class=12)
    data = load_data(f"imagefolder:{root}", image_size=28)
    cfg = make_config("inception_bn", dataset=data.name, image_size=28, steps=2, batch_size=8, val_size=4, device="cpu",
                      seed=0, record_branch_grads=True)
    run_dir = fit(cfg, data, out_root=tmp_path / "runs", progress=False).run_dir
    branches = [f"incep{i}.{n}" for i in range(1, 5) for n in ("1x1", "3x3", "3x3dbl", "pool")]
    recorded = json.loads((run_dir / "branch_grads.json").read_text())
    assert recorded["model"] == "inception_bn"
    assert list(recorded["epochs"][-1]["mean_squared_norm"]) == branches
    assert all(v > 0 for v in recorded["epochs"][-1]["mean_squared_norm"].values())

    assert main(["analyze", "branches", str(run_dir), "--out", str(tmp_path / "analysis"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "trained `inception_bn` model(s)" in out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| incep")]
    assert [f"{r[0]}.{r[1]}" for r in rows] == branches
    assert all(cell.endswith("%") for r in rows for cell in r[2:])  # every measure, the recorded gradient share too
    assert (tmp_path / "analysis" / "branches.png").stat().st_size > 10_000
