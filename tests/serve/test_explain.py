"""/api/explain and /api/model over every registered model: each part of each can be switched off through the API,
and unknown models and parts get a 4xx naming the valid ones. Mechanics only: the models are trained for a few steps
on noise (test_browser.py checks what a real model shows)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.models import list_models  # noqa: E402
from cnnlab.train import fit, make_config  # noqa: E402

from ..support.data import synthetic_mnist  # noqa: E402


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = synthetic_mnist(train=300, test=50, seed=0)
    for name in list_models():
        fit(make_config(name, steps=2, batch_size=50, val_size=50, device="cpu"), data, out_root=root, progress=False)
    return root


@pytest.fixture(scope="module")
def client(runs_root):
    from cnnlab.serve.app import create_app

    with TestClient(create_app(runs_root=runs_root, training=False), base_url="http://127.0.0.1") as c:
        yield c


def _seven() -> bytes:
    img = Image.new("L", (120, 120), 255)
    img.paste(0, (20, 20, 100, 32))
    img.paste(0, (80, 20, 92, 110))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_every_model_is_served_with_its_parts(client):
    listing = client.get("/api/model").json()
    assert sorted(m["model"] for m in listing["models"]) == sorted(list_models())  # the newest run of each
    by_model = {m["model"]: m for m in listing["models"]}
    assert {p["name"] for p in by_model["inception_net"]["parts"]} >= {"incep1.5x5", "incep2.pool"}
    assert {p["name"] for p in by_model["resnet"]["parts"]} == {"rblock1.skip", "rblock1.conv", "rblock2.skip", "rblock2.conv"}
    assert by_model["basic_cnn"]["parts"] == []
    assert listing["default"] in {m["id"] for m in listing["models"]}


def test_each_part_of_each_model_switches_off_through_the_api(client, reliability):
    png, tried = _seven(), 0
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    for m in client.get("/api/model").json()["models"]:
        whole = client.post(f"/api/explain?model={m['id']}", content=png, headers={"content-type": "image/png"})
        assert whole.status_code == 200, whole.text
        body = whole.json()
        assert body["model"] == m["id"] and body["silenced"] == [] and body["layers"]
        assert abs(sum(body["probabilities"]) - 1) < 1e-4 and body["probabilities"] == body["probabilities_full"]
        assert body["input"]["png"].startswith("data:image/png;base64,")
        for part in m["parts"]:
            r = client.post("/api/explain", json={"image": url, "model": m["id"], "silence": [part["name"]]})
            assert r.status_code == 200, (m["model"], part, r.text)
            assert r.json()["silenced"] == [part["name"]] and r.json()["probabilities_full"] == body["probabilities"]
            tried += 1
        if len(m["parts"]) >= 2:  # several at once, through the query
            names = [p["name"] for p in m["parts"][:2]]
            q = "&".join(f"silence={n}" for n in names)
            r = client.post(f"/api/explain?model={m['id']}&{q}", content=png, headers={"content-type": "image/png"})
            assert r.status_code == 200 and r.json()["silenced"] == names
    assert tried >= 12
    reliability("web API /api/explain", f"every part of every registered model ({len(list_models())}) switched off",
                tried, "200 each, the part named as silenced, the unswitched probabilities as without it")


def test_unknown_models_and_parts_name_the_valid_ones(client):
    png = _seven()
    models = client.get("/api/model").json()["models"]
    resnet = next(m for m in models if m["model"] == "resnet")
    r = client.post("/api/explain?model=resnet", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 404 and resnet["id"] in r.json()["error"]  # a model's name is not a served id
    r = client.post(f"/api/explain?model={resnet['id']}&silence=incep1.5x5", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 422 and "incep1.5x5" in r.json()["error"] and "rblock2.skip" in r.json()["error"]
    r = client.post("/api/explain", content=json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode(),
                                                         "model": resnet["id"], "silence": ["rblock9.conv", "rblock1.skip"]}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "rblock9.conv" in r.json()["error"]
