"""The data set registry: a data set added in a test alone trains, evaluates, predicts and is served, with nothing
outside this file changed; and no name is looked up twice or compared elsewhere."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import DatasetEntry, ImageSet, entries, lookup, register_dataset, unregister_dataset

CLASSES = ("across", "down")


def _bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with one bright bar across (class 0) or down (class 1): easy, 20x20, grey."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 20, 20), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    at = torch.randint(4, 16, (n,), generator=g)
    for i in range(n):
        if y[i] == 0:
            x[i, at[i], 2:18] = 255
        else:
            x[i, 2:18, at[i]] = 255
    return x, y


def _load(path, data_dir=None, **_) -> ImageSet:
    train_x, train_y = _bars(600, 0)
    test_x, test_y = _bars(200, 1)
    return ImageSet(train_x, train_y, test_x, test_y, source="made by the test", name="bars", title="Bars", classes=CLASSES,
                    mean=float(train_x.float().div(255).mean()), std=float(train_x.float().div(255).std()))


def _prepare(picture, in_channels: int, image_size: int) -> np.ndarray:
    img = Image.open(io.BytesIO(picture)) if isinstance(picture, bytes) else Image.open(picture)
    return np.array(img.convert("L").resize((image_size, image_size)), dtype=np.uint8)


@pytest.fixture
def bars():
    entry = register_dataset(DatasetEntry(
        name="bars", title="Bars", summary="a bar across or down, 20x20", load=_load, prepare=_prepare,
        classes=CLASSES, recipe=dict(max_rotate=0.0, max_scale=0.0, val_size=100),
    ))
    yield entry
    unregister_dataset("bars")


def _png(across: bool) -> bytes:
    a = np.zeros((20, 20), dtype=np.uint8)
    if across:
        a[9, 2:18] = 255
    else:
        a[2:18, 9] = 255
    buf = io.BytesIO()
    Image.fromarray(a).resize((60, 60)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_data_set_registered_here_trains_evaluates_predicts_and_is_served(bars, tmp_path, capsys):
    assert lookup("bars").entry is bars and "bars" in [e.name for e in entries()]
    assert main(["train", "--model", "basic_cnn", "--dataset", "bars", "--epochs", "3", "--batch-size", "50",
                 "--image-size", "20", "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Bars: 500 training + 100 validation + 200 test images from made by the test" in out, out
    (run,) = (tmp_path / "runs").glob("*-basic_cnn")
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "bars" and config["max_rotate"] == 0.0  # the entry's recipe changes were applied

    assert main(["evaluate", str(run)]) == 0
    report = capsys.readouterr().out
    assert "test images" in report and "Bars" in report and "0 across" in report and "1 down" in report

    (tmp_path / "across.png").write_bytes(_png(True))
    (tmp_path / "down.png").write_bytes(_png(False))
    assert main(["predict", str(run), str(tmp_path / "across.png"), str(tmp_path / "down.png"), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["top"][0]["name"] for p in preds] == ["across", "down"]

    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cnnlab.serve.app import create_app

    with TestClient(create_app([run], training=False), base_url="http://127.0.0.1") as client:
        [info] = client.get("/api/model").json()["models"]
        assert info["classes"] == list(CLASSES) and info["data_title"] == "Bars"
        r = client.post("/api/predict", content=_png(False), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["top"][0]["name"] == "down", r.text


def test_an_unknown_or_malformed_data_set_name_is_one_line_naming_the_choices(capsys):
    for name in ("cifar", "imagefolder", "mnist:/x", "imagefolder:"):
        with pytest.raises(ValueError, match="choose from: mnist, fashion-mnist, imagefolder:PATH"):
            lookup(name)
        with pytest.raises(SystemExit) as e:
            main(["train", "--dataset", name])
        assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_name_is_registered_once():
    entry = lookup("mnist").entry
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(entry)
