"""The web API through FastAPI's TestClient: good requests answer, every bad one gets a 4xx and a reason."""

import base64
import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402

LOCAL = "http://127.0.0.1"  # a name the app answers to (TestClient's own, testserver, is refused)


@pytest.fixture(scope="module")
def client(trained_resnet):
    with TestClient(create_app([trained_resnet], training=False), base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def seven_png(real_mnist):
    i = real_mnist.test_labels.tolist().index(7)
    img = Image.fromarray(255 - real_mnist.test_images[i].numpy()).resize((140, 140))  # dark on light, big
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _check_prediction(r, expected: int, model: str):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top"][0]["class"] == expected
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    seen = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
    assert seen.size == (28, 28)
    assert body["model"] == model


def test_page_health_and_model(client, trained_resnet):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "text/html" in page.headers["content-type"]
    assert client.get("/api/health").json() == {"status": "ok"}
    listing = client.get("/api/model").json()
    [info] = listing["models"]
    assert info["id"] == trained_resnet.name == listing["default"]
    assert info["model"] == "resnet" and info["parameters"] == 41514 and info["test_accuracy"] > 0.98
    assert info["label"].startswith("resnet · ") and "%" in info["label"]
    assert str(trained_resnet.parent) not in json.dumps(listing)  # no server path in any answer
    assert listing["training"] == {"enabled": False, "state": "idle"}


def test_predict_as_upload_data_url_and_raw_bytes(client, seven_png, trained_resnet):
    run = trained_resnet.name
    _check_prediction(client.post("/api/predict", files={"file": ("seven.png", seven_png, "image/png")}), 7, run)
    url = "data:image/png;base64," + base64.b64encode(seven_png).decode()
    _check_prediction(client.post("/api/predict", json={"image": url}), 7, run)
    _check_prediction(client.post("/api/predict", json={"image": url, "model": run}), 7, run)
    _check_prediction(client.post(f"/api/predict?model={run}", content=seven_png, headers={"Content-Type": "image/png"}), 7, run)


def _multipart(body_parts: bytes, boundary: str = "XyZ") -> dict:
    return {"content": body_parts, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


BAD_REQUESTS = {
    "wrong content type": (415, {"content": b"hello", "headers": {"Content-Type": "text/plain"}}),
    "no content type": (415, {"content": b"hello"}),
    "empty body": (400, {"content": b"", "headers": {"Content-Type": "image/png"}}),
    "not an image": (422, {"content": b"GIF89a but not really", "headers": {"Content-Type": "image/gif"}}),
    "truncated png": (422, "truncated"),
    "blank image": (422, "blank"),
    "too large body": (413, {"content": b"\0" * (6 * 2**20), "headers": {"Content-Type": "image/png"}}),
    "too many pixels": (413, "huge"),
    "malformed json": (400, {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    "json without image": (400, {"json": {"picture": "x"}}),
    "json not a data url": (400, {"json": {"image": "http://example.com/a.png"}}),
    "bad base64": (400, {"json": {"image": "data:image/png;base64,!!!!"}}),
    "multipart without boundary": (400, {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}}),
    "multipart garbage": (400, _multipart(b"--XyZ\r\nnonsense\r\n--XyZ--")),
    "multipart without file": (400, {"files": {"other": ("a.png", b"abc", "image/png")}}),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_4xx_with_a_reason(client, name, reliability):
    status, kwargs = BAD_REQUESTS[name]
    if kwargs == "truncated":
        buf = io.BytesIO()
        Image.new("L", (64, 64), 0).save(buf, format="PNG")
        kwargs = {"content": buf.getvalue()[:50], "headers": {"Content-Type": "image/png"}}
    elif kwargs == "blank":
        buf = io.BytesIO()
        Image.new("L", (64, 64), 255).save(buf, format="PNG")
        kwargs = {"content": buf.getvalue(), "headers": {"Content-Type": "image/png"}}
    elif kwargs == "huge":
        buf = io.BytesIO()
        Image.new("1", (5000, 8), 0).save(buf, format="PNG")  # small file, too many pixels a side
        kwargs = {"content": buf.getvalue(), "headers": {"Content-Type": "image/png"}}
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]
    reliability("web API /api/predict", "hand-picked bad requests: " + ", ".join(BAD_REQUESTS), 1,
                "each the 4xx it should be (400, 413, 415 or 422) with an {\"error\"} reason")
    assert client.get("/api/health").status_code == 200  # and it keeps serving


def test_the_api_answers_json_errors_for_unknown_routes_and_methods(client):
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/api/predict").status_code == 405
    assert json.loads(client.get("/api/nothing").text)


def test_a_model_of_other_classes_answers_with_their_names(fashion_named_run):
    """Mechanics only (a model trained on noise): the class names recorded in training reach the API, and a
    Fashion-MNIST model's pictures are prepared as garments."""
    from cnnlab.data.sets.fashion_mnist import SPEC as FASHION_MNIST

    run = fashion_named_run
    with TestClient(create_app([run]), base_url=LOCAL) as c:
        [info] = c.get("/api/model").json()["models"]
        assert info["classes"] == list(FASHION_MNIST.classes) and info["data_title"] == "Fashion-MNIST"
        buf = io.BytesIO()
        Image.new("RGB", (60, 80), "white").save(buf, format="PNG")  # a blank photo: no item
        r = c.post("/api/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and "no item" in r.json()["error"]
        img = Image.new("RGB", (60, 80), "white")
        img.paste((30, 30, 30), (15, 10, 45, 70))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        body = c.post("/api/predict", content=buf.getvalue(), headers={"Content-Type": "image/png"}).json()
        assert body["top"][0]["name"] == FASHION_MNIST.classes[body["top"][0]["class"]]


def test_the_default_model_is_the_first_with_parts_to_switch_off(trained_resnet, fashion_named_run):
    """The page opens on what the inside view is for: served after a basic_cnn, the resnet is the default."""
    with TestClient(create_app([fashion_named_run, trained_resnet], training=False), base_url=LOCAL) as c:
        listing = c.get("/api/model").json()
        assert [m["model"] for m in listing["models"]] == ["basic_cnn", "resnet"]
        assert listing["default"] == trained_resnet.name
    with TestClient(create_app([fashion_named_run], training=False), base_url=LOCAL) as c:
        assert c.get("/api/model").json()["default"] == fashion_named_run.name  # no parts anywhere: the first
