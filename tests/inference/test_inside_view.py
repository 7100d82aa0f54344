"""The inside view (cnnlab.inference.explain, over cnnlab.models.switches) on every registered model: parts, switching
them off, what explain reports, and that a shared model is left as it was, also across threads."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.config import make_config
from cnnlab.inference.explain import Explanation, explain
from cnnlab.models import branched_blocks, create_model, list_models, residual_blocks
from cnnlab.models.switches import UnknownPart, parts, switched_off
from cnnlab.models.stages import stage_lines
from cnnlab.plotting import diverging_rgba, plot_inside
from cnnlab.runs.checkpoint import Checkpoint
from cnnlab.runs.forward import model_input
from cnnlab.runs.trained import TrainedModel

MODELS = list_models()


def _trained(name: str, **kwargs) -> TrainedModel:
    """An untrained network as a trained model: seeded weights, and batch norms given random statistics and scales,
    so that every path carries a signal (a fresh BasicBlockBN's conv path starts at zero)."""
    torch.manual_seed(0)
    network = create_model(name, **kwargs)
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    cfg = make_config(name, channels_last=False)
    return TrainedModel(network.eval(), cfg, Checkpoint(model_state={}, config=cfg.to_dict()), Path("untrained"))


def _seven(size: int = 28) -> np.ndarray:
    """A 7 drawn white on black."""
    img = np.zeros((size, size), np.uint8)
    img[6:9, 7:21] = 255
    for i in range(14):
        img[8 + i, 19 - i // 2 : 22 - i // 2] = 255
    return img


def _input_of(trained: TrainedModel, module: nn.Module, picture: np.ndarray) -> torch.Tensor:
    """What `module` receives when `trained` reads `picture` (prepared as predict does) with nothing switched off."""
    got = []
    handle = module.register_forward_hook(lambda m, args, out: got.append(args[0]))
    try:
        with torch.inference_mode():
            trained.network(model_input(torch.from_numpy(trained.prepare(picture)).unsqueeze(0), trained.config))
    finally:
        handle.remove()
    return got[0]


def _png_size(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return img.height, img.width


@pytest.mark.parametrize("name", MODELS)
def test_parts_are_every_branch_and_every_residual_path_in_forward_order(name):
    model = create_model(name)
    expected = [f"{b}.{n}" for b, block in branched_blocks(model).items() for n in block.branch_names]
    expected += [f"{b}.{p}" for b in residual_blocks(model) for p in ("skip", "conv")]
    got = parts(model)
    assert sorted(p.name for p in got) == sorted(expected)
    for p in got:
        assert p.name.startswith(p.block + ".")
        assert p.kind == ("branch" if p.block in branched_blocks(model) else p.name.rsplit(".", 1)[1])
    blocks = list(dict.fromkeys(p.block for p in got))
    shown = [layer.name for layer in explain(_trained(name), _seven()).layers if layer.kind in ("inception", "residual")]
    assert blocks == shown  # the order in which the forward reaches them
    if name == "basic_cnn":
        assert got == []


@pytest.mark.parametrize("name", MODELS)
def test_every_part_can_be_switched_off_and_is_reported_so(name):
    trained = _trained(name)
    for part in parts(trained.network):
        e = explain(trained, _seven(), [part.name])
        assert e.silenced == (part.name,)
        assert sum(e.probabilities) == pytest.approx(1.0, abs=1e-5)
        layer = e.layer(part.block)
        views = {v.part: v for v in layer.branches + layer.paths}
        assert views[part.name].silenced
        assert [v.part for v in views.values() if v.silenced] == [part.name]


def _module_outputs(trained: TrainedModel, picture: np.ndarray) -> dict[str, tuple[int, ...]]:
    """The output shape (without the batch) of every module of the network in its own forward, by dotted name."""
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str):
        def hook(module, args, out) -> None:
            shapes.setdefault(name, tuple(out.shape[1:]))
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in trained.network.named_modules() if n]
    try:
        trained.predict(picture)
    finally:
        for h in handles:
            h.remove()
    return shapes


@pytest.mark.parametrize("name", MODELS)
def test_the_stages_are_the_forward_s_own_with_their_shapes(name):
    """Every stage with a module of its own (a convolution, a batch norm, a linear layer) has that module's output
    shape in the network's own forward; every block its block's; the maps are drawn at those shapes."""
    trained = _trained(name)
    e = explain(trained, _seven(), max_maps=8)
    own = _module_outputs(trained, _seven())
    modules = dict(trained.network.named_modules())
    seen = 0
    for layer in e.layers:
        stages = [layer] if layer.kind not in ("inception", "residual") else [
            *layer.join, *(s for b in layer.branches for s in b.stages), *(s for p in layer.paths for s in p.stages)]
        if layer.kind in ("inception", "residual"):
            assert layer.shape == own[layer.name]
            seen += 1
        for s in stages:
            if s.name in modules and not isinstance(modules[s.name], nn.Sequential):
                assert s.shape == own[s.name], s.name
                seen += 1
        if layer.maps is not None:
            c, h, w = layer.shape
            assert layer.maps.channels == c and layer.maps.count == min(c, 8) and layer.maps.size == (h, w)
            rows, cols = layer.maps.grid
            assert rows * cols >= layer.maps.count > (rows - 1) * cols
            assert layer.maps.atlas.shape == (rows * (h + 1) - 1, cols * (w + 1) - 1, 4)
        if layer.kind == "inception":
            c, h, w = layer.shape
            assert sum(b.shape[0] for b in layer.branches) == c
            assert all(b.shape[1:] == (h, w) for b in layer.branches)
    assert seen >= 3
    assert e.layers[-1].kind == "linear" and e.layers[-1].maps is None
    assert len(e.layers[-1].values) == len(e.classes) == e.layers[-1].shape[0]
    with torch.inference_mode():
        logits = trained.network(model_input(torch.from_numpy(trained.prepare(_seven())).unsqueeze(0), trained.config))
    assert e.layers[-1].values == pytest.approx(logits[0].tolist(), abs=1e-5)


def test_the_lecture_s_stages_and_arithmetic():
    """inception_net as the lecture draws it: conv, pool, ReLU each a stage with its true shape, 28 - 5 + 1 = 24,
    24 / 2 = 12, the Inception block's 16 + 24 + 24 + 24 = 88 and the flatten's 88 x 4 x 4 = 1408."""
    e = explain(_trained("inception_net"), _seven())
    assert [(layer.name, layer.kind, layer.shape) for layer in e.layers] == [
        ("conv1", "conv", (10, 24, 24)), ("pool1", "pool", (10, 12, 12)), ("relu1", "relu", (10, 12, 12)),
        ("incep1", "inception", (88, 12, 12)),
        ("conv2", "conv", (20, 8, 8)), ("pool2", "pool", (20, 4, 4)), ("relu2", "relu", (20, 4, 4)),
        ("incep2", "inception", (88, 4, 4)), ("flatten", "flatten", (1408,)), ("fc", "linear", (10,))]
    rules = {layer.name: layer.arithmetic for layer in e.layers}
    assert rules["conv1"].startswith("28 − 5 + 1 = 24") and rules["pool1"] == "24 / 2 = 12"
    assert rules["conv2"].startswith("12 − 5 + 1 = 8") and rules["pool2"] == "8 / 2 = 4"
    assert rules["incep1"] == rules["incep2"] == "16 + 24 + 24 + 24 = 88"
    assert rules["flatten"] == "88 × 4 × 4 = 1408" and rules["fc"] == "1408 → 10"
    five = e.layer("incep1").branches[1]
    assert five.name == "5x5" and [(s.op, s.shape) for s in five.stages] == [("conv", (16, 12, 12)), ("conv", (24, 12, 12))]
    assert five.stages[1].arithmetic.startswith("12 + 2×2 − 5 + 1 = 12")
    assert e.layer("flatten").values is None  # only the logits are sent as numbers
    resnet = explain(_trained("resnet"), _seven())
    block = resnet.layer("rblock1")
    assert [p.name for p in block.paths] == ["skip", "conv", "sum"]
    assert block.paths[0].stages == ()  # the skip is x itself
    assert [s.op for s in block.paths[1].stages] == ["conv", "relu", "conv"]
    assert [j.op for j in block.join] == ["sum", "relu"]  # relu(F(x) + x)
    assert block.join[0].shape == block.shape == (16, 12, 12)


@pytest.mark.parametrize("name", MODELS)
def test_the_page_plot_inside_and_the_notebook_show_the_same_stages(name, tmp_path):
    """The notebook prints `stage_lines` of the bare network; `explain` (the page's answer and plot_inside's input)
    carries the same lines, and its layers are those lines' top-level stages with the same shapes."""
    trained = _trained(name)
    e = explain(trained, _seven())
    assert list(e.lines) == stage_lines(create_model(name))
    top = [line for line in e.lines[1:] if not line.startswith(" ")]
    assert [line.split()[0] for line in top] == [layer.name for layer in e.layers]
    for line, layer in zip(top, e.layers):
        assert f"-> {' × '.join(map(str, layer.shape))} " in line + " "
    d = e.as_dict()
    assert [(l["name"], tuple(l["shape"]), l["arithmetic"]) for l in d["layers"]] == [
        (layer.name, layer.shape, layer.arithmetic) for layer in e.layers]
    fig = plot_inside(e, tmp_path / "inside.png")
    titles = " ".join(ax.get_title() for ax in fig.axes)
    drawn = [layer for layer in e.layers if layer.maps is not None or layer.values is not None]  # not the flatten
    assert len(drawn) >= len(e.layers) - 1
    assert all(f"{layer.name}: {' × '.join(map(str, layer.shape))}" in titles for layer in drawn)
    assert all(line in fig.axes[-1].texts[0].get_text() for line in e.lines)


@pytest.mark.parametrize("scale", ["stage", "map", "global"])
def test_each_map_is_coloured_by_its_value_on_the_scale_it_says(scale):
    """Zero is the middle colour, a value at the limit the end colour, and the limits span what `scale` says."""
    e = explain(_trained("resnet"), _seven(), scale=scale)
    drawn = [layer.maps for layer in e.layers if layer.maps is not None]
    everything = max(float(m.values.abs().max()) for m in drawn)
    for maps in drawn:
        assert maps.scope == scale and len(maps.limits) == maps.count
        per_map = maps.values.abs().amax(dim=(1, 2)).tolist()
        if scale == "map":
            assert maps.limits == pytest.approx(per_map)
        elif scale == "stage":
            assert maps.limits == pytest.approx([max(per_map)] * maps.count)
        else:
            assert maps.limits == pytest.approx([everything] * maps.count)
        for i in range(maps.count):
            tile, v = maps.tile(i), maps.values[i].numpy()
            assert (tile[..., 3] == 255).all()  # a map is opaque; only gaps and empty slots are transparent
            expected = diverging_rgba(np.clip(v / (maps.limits[i] or 1.0), -1, 1))
            assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1
    conv1 = explain(_trained("inception_net"), _seven(), scale=scale).layer("conv1").maps  # 10 maps in a 4 x 3 grid
    rows, cols = conv1.grid
    assert conv1.count < rows * cols and (conv1.atlas[-conv1.size[0]:, -conv1.size[1]:, 3] == 0).all()  # empty slot
    with pytest.raises(ValueError, match="scale"):
        explain(_trained("resnet"), _seven(), scale="log")


@pytest.mark.parametrize("name", [n for n in MODELS if branched_blocks(create_model(n))])
def test_branch_shares_sum_to_one_and_probabilities_to_one(name):
    trained = _trained(name)
    first = next(iter(branched_blocks(trained.network)))
    for silence in ((), (f"{first}.{branched_blocks(trained.network)[first].branch_names[0]}",)):
        e = explain(trained, _seven(), silence)
        for probs in (e.probabilities, e.probabilities_full):
            assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        for layer in e.layers:
            if layer.kind == "inception":
                on = [b for b in layer.branches if not b.silenced]
                assert sum(b.share for b in on) == pytest.approx(1.0)
                assert all(0 <= b.share <= 1 for b in on)
                # a branch that is off shows nothing: no share, no maps
                assert all(b.share is None and b.maps is None for b in layer.branches if b.silenced)


@pytest.mark.parametrize("name", [n for n in MODELS if branched_blocks(create_model(n))])
def test_silencing_every_branch_of_a_block_makes_its_output_zero(name):
    trained = _trained(name)
    model = trained.network
    for block_name, block in branched_blocks(model).items():
        x = _input_of(trained, block, _seven())
        everything = [f"{block_name}.{b}" for b in block.branch_names]
        with torch.inference_mode(), switched_off(model, everything):
            assert torch.count_nonzero(block(x)) == 0
        with torch.inference_mode():
            assert torch.count_nonzero(block(x)) > 0  # switched on again
        e = explain(trained, _seven(), everything)
        assert not e.layer(block_name).maps.values.any()  # what the network goes on with: zeros
        assert all(b.silenced and b.maps is None for b in e.layer(block_name).branches)


@pytest.mark.parametrize("name", [n for n in MODELS if residual_blocks(create_model(n))])
def test_silencing_a_skip_leaves_relu_of_the_conv_path_and_the_reverse(name):
    trained = _trained(name)
    model = trained.network
    for block_name, block in residual_blocks(model).items():
        x = _input_of(trained, block, _seven())
        with torch.inference_mode():
            skip, conv = block.paths(x)  # after: a ReLU, or nothing in a pre-activation unit (BN and ReLU, or ...)
            assert torch.equal(block(x), block.after(skip + conv))
            with switched_off(model, f"{block_name}.skip"):
                assert torch.equal(block(x), block.after(conv))
            with switched_off(model, f"{block_name}.conv"):
                assert torch.equal(block(x), block.after(skip))
            with switched_off(model, [f"{block_name}.skip", f"{block_name}.conv"]):
                assert torch.count_nonzero(block(x)) == 0
    first = next(iter(residual_blocks(model)))  # nothing before it is switched: its input is as in the plain run
    x = _input_of(trained, residual_blocks(model)[first], _seven())
    with torch.inference_mode():
        skip, conv = residual_blocks(model)[first].paths(x)
    paths = {p.name: p for p in explain(trained, _seven(), [f"{first}.skip"]).layer(first).paths}
    assert paths["skip"].norm is None and paths["skip"].maps is None and paths["skip"].silenced  # off: nothing
    assert paths["conv"].norm == pytest.approx(float(conv.norm()), rel=1e-4) and not paths["conv"].silenced
    with torch.inference_mode():
        expected = float(residual_blocks(model)[first].after(conv).norm())
    assert paths["sum"].norm == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert paths["sum"].part is None


def test_unknown_parts_raise_naming_them_and_the_valid_ones():
    trained = _trained("inception_net")
    with pytest.raises(UnknownPart) as caught:
        explain(trained, _seven(), ["incep1.5x5", "incep1.7x7", "rblock1.skip"])
    message = str(caught.value)
    assert "'incep1.7x7'" in message and "'rblock1.skip'" in message and "'incep1.5x5'" not in message.split(";")[0]
    assert all(p.name in message for p in parts(trained.network))
    assert caught.value.unknown == ("incep1.7x7", "rblock1.skip")
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError (the CLI, the server) see it
    with pytest.raises(UnknownPart) as caught:
        explain(trained, _seven(), ["incep1.5x5", 7, ["incep1.5x5"], "incep1.7x7", "incep1.7x7"])
    assert caught.value.unknown == (7, ["incep1.5x5"], "incep1.7x7")  # from JSON: a number, a list
    with pytest.raises(UnknownPart, match="no parts to switch off"):
        explain(_trained("basic_cnn"), _seven(), ["conv1.skip"])
    with pytest.raises(ValueError, match="max_maps"):
        explain(trained, _seven(), max_maps=0)


@pytest.mark.parametrize("name", MODELS)
def test_explain_leaves_the_model_as_it_was(name):
    trained = _trained(name)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = trained.network(x)
    e = explain(trained, _seven(), [p.name for p in parts(trained.network)])
    with torch.inference_mode():
        assert torch.equal(trained.network(x), before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained.network.modules())
    assert e.probabilities_full == pytest.approx(trained.predict(_seven()).probabilities, abs=1e-6)


def test_explain_leaves_the_model_as_it_was_when_the_forward_raises():
    """A network that takes 3 channels, recorded as taking 1: the picture is prepared grey, and the forward fails in
    the first convolution, after the hooks are in."""
    torch.manual_seed(0)
    network = create_model("inception_net", in_channels=3).eval()
    cfg = make_config("inception_net", channels_last=False)
    record = Checkpoint(model_state={}, config=cfg.to_dict(), model_kwargs={"in_channels": 1})
    trained = TrainedModel(network, cfg, record, Path("untrained"))
    x = torch.randn(2, 3, 28, 28)
    with torch.inference_mode():
        before = network(x)
    with pytest.raises(RuntimeError):
        explain(trained, _seven())
    with pytest.raises(RuntimeError), switched_off(network, ["incep1.5x5"]):
        network(torch.randn(2, 1, 28, 28))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in network.modules())
    with torch.inference_mode():
        assert torch.equal(network(x), before)


def test_with_nothing_switched_off_both_probabilities_are_the_prediction():
    trained = _trained("resnet")
    e = explain(trained, _seven())
    assert e.silenced == () and e.probabilities == e.probabilities_full
    assert e.probabilities == pytest.approx(trained.predict(_seven()).probabilities, abs=1e-6)
    assert e.top == e.top_full == int(np.argmax(trained.predict(_seven()).probabilities))


def test_mirror_averaged_models_report_the_averaged_probabilities():
    trained = _trained("inception_net")
    trained.config.tta_hflip = True
    e = explain(trained, _seven(), ["incep2.pool"])
    assert e.probabilities_full == pytest.approx(trained.predict(_seven()).probabilities, abs=1e-6)
    with torch.inference_mode(), switched_off(trained.network, "incep2.pool"):
        assert e.probabilities == pytest.approx(trained.predict(_seven()).probabilities, abs=1e-6)


def test_threads_sharing_one_model_each_get_their_own_answer():
    """Two threads explain with different parts switched off, a third predicts, all at once and many times: each
    answer is the one it gets alone (a hook acting in the wrong thread would switch parts off for the others)."""
    trained = _trained("inception_net")
    jobs = {"a": ["incep1.5x5", "incep2.pool"], "b": ["incep1.1x1"], "c": []}
    alone = {k: explain(trained, _seven(), silence).as_dict() for k, silence in jobs.items()}
    predicted = trained.predict(_seven()).probabilities
    assert alone["a"]["probabilities"] != alone["b"]["probabilities"]
    results: dict[str, list] = {k: [] for k in [*jobs, "predict"]}
    start = threading.Barrier(len(results))

    def work(key: str) -> None:
        start.wait()
        for _ in range(15):
            if key == "predict":
                results[key].append(trained.predict(_seven()).probabilities)
            else:
                results[key].append(explain(trained, _seven(), jobs[key]).as_dict())

    threads = [threading.Thread(target=work, args=(k,)) for k in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, answers in results.items():
        assert len(answers) == 15, key
        for got in answers:
            if key == "predict":
                assert got == pytest.approx(predicted, abs=1e-6)
                continue
            want = alone[key]
            assert got["silenced"] == want["silenced"]
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
            for g, w in zip(got["layers"], want["layers"]):
                assert (g["name"], g["shape"]) == (w["name"], w["shape"])
                assert [b["silenced"] for b in g.get("branches", [])] == [b["silenced"] for b in w.get("branches", [])]
                assert [b["share"] for b in g.get("branches", [])] == pytest.approx([b["share"] for b in w.get("branches", [])], abs=1e-6)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained.network.modules())


@pytest.mark.parametrize("name", ["inception_net", "resnet_bn"])
def test_as_dict_is_json_with_pngs_of_the_stated_sizes(name):
    trained = _trained(name)
    d = explain(trained, _seven(40), [parts(trained.network)[1].name], max_maps=12).as_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) >= {"classes", "silenced", "probabilities", "probabilities_full", "top", "top_full", "input", "layers"}
    assert d["input"]["shape"] == [1, 28, 28] and _png_size(d["input"]["png"]) == (28, 28)
    assert d["top"] == int(np.argmax(d["probabilities"]))
    for layer in d["layers"]:
        mapsets = [layer["maps"]] + [b["maps"] for b in layer.get("branches", [])] + [p["maps"] for p in layer.get("paths", [])]
        if layer["kind"] in ("linear", "flatten"):
            assert layer["maps"] is None
            assert layer["kind"] == "flatten" or len(layer["values"]) == layer["shape"][0]
            continue
        assert "values" not in layer
        assert ("branches" in layer) == (layer["kind"] == "inception") and ("paths" in layer) == (layer["kind"] == "residual")
        for maps in mapsets:
            if maps is None:  # a part that is off
                continue
            (rows, cols), (h, w) = maps["grid"], maps["size"]
            assert _png_size(maps["png"]) == (rows * (h + 1) - 1, cols * (w + 1) - 1)
            assert len(maps["limits"]) == maps["count"] and maps["scope"] == "stage" and maps["gap"] == 1
            assert maps["count"] == min(maps["channels"], 12)
        for p in layer.get("paths", []):
            assert (p["norm"] is None) == p["silenced"] and (p["norm"] is None or p["norm"] >= 0)
            assert [p["name"] for p in layer["paths"]] == ["skip", "conv", "sum"]


@pytest.mark.parametrize("name", ["inception_net", "resnet", "basic_cnn"])
def test_plot_inside_draws_every_layer(name, tmp_path):
    trained = _trained(name)
    silence = [parts(trained.network)[0].name] if parts(trained.network) else []
    e = explain(trained, _seven(), silence)
    assert isinstance(e, Explanation) and name in repr(e)
    fig = plot_inside(e, tmp_path / "inside.png")
    assert (tmp_path / "inside.png").stat().st_size > 0
    images = sum(len(ax.images) for ax in fig.axes)
    views = sum(1 + sum(b.maps is not None for b in layer.branches)
                + sum(p.maps is not None for p in layer.paths if p.part is not None)
                for layer in e.layers if layer.maps is not None)
    assert images == 1 + views  # the input, and every stage's, branch's and path's maps (none for a part that is off)
