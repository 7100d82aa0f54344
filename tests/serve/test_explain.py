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


def _model_id(client, name: str) -> str:
    return next(m["id"] for m in client.get("/api/model").json()["models"] if m["model"] == name)


def test_the_colour_scale_is_the_one_asked_for_and_an_unknown_one_is_refused(client):
    image = "data:image/png;base64," + base64.b64encode(_seven()).decode("ascii")
    model = _model_id(client, "inception_net")
    for scale in ("stage", "map", "global"):
        answer = client.post("/api/explain", json={"image": image, "model": model, "scale": scale}).json()
        assert answer["scale"] == scale and len(answer["colours"]) == 3
        drawn = [l["maps"] for l in answer["layers"] if l["maps"]]
        assert all(m["scope"] == scale and len(m["limits"]) == m["count"] for m in drawn)
        if scale == "global":
            assert len({m["limits"][0] for m in drawn}) == 1
    refused = client.post("/api/explain", json={"image": image, "model": model, "scale": "log"})
    assert refused.status_code == 422
    assert refused.json()["code"] == "scale.unknown" and "stage" in refused.json()["error"]


def test_a_value_s_arithmetic_through_the_api_and_bad_positions_refused(client):
    image = "data:image/png;base64," + base64.b64encode(_seven()).decode("ascii")
    model = _model_id(client, "resnet")
    layers = client.post("/api/explain", json={"image": image, "model": model}).json()["layers"]
    conv1 = next(l for l in layers if l["name"] == "conv1")
    answer = client.post("/api/value", json={"image": image, "model": model, "stage": conv1["stage"],
                                             "channel": 1, "y": 4, "x": 5}).json()
    conv = answer["steps"][0]
    assert conv["op"] == "conv" and answer["at"] == [1, 4, 5]
    assert conv["computed"] == pytest.approx(answer["value"], abs=1e-5)
    assert [s["op"] for s in answer["steps"]][1:] == ["maxpool", "relu"]
    # the same through the query string, with the image as bytes
    query = client.post(f"/api/value?model={model}&stage={conv1['stage']}&channel=1&y=4&x=5", content=_seven(),
                        headers={"Content-Type": "image/png"})
    assert query.status_code == 200 and query.json()["value"] == answer["value"]
    for bad in ({"stage": 10_000, "channel": 0, "y": 0, "x": 0}, {"stage": conv1["stage"], "channel": 0, "y": 99, "x": 0},
                {"stage": conv1["stage"], "channel": "a", "y": 0, "x": 0}, {"stage": conv1["stage"]}):
        refused = client.post("/api/value", json={"image": image, "model": model, **bad})
        assert refused.status_code == 422, bad
        assert refused.json()["code"] == "value.missing"
