"""No answer of the server holds a path of its own: a model trained on an image folder is described with the data
set's name and the folder's own name ("imagefolder:shapes"), never where the folder is, and neither its answers
nor its errors name the runs folder."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402

from ..support.runs import SIZE, train_on_shapes  # noqa: E402


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A basic_cnn run on a folder of drawn shapes, under a tmp path that no answer may hold."""
    return train_on_shapes(tmp_path_factory.mktemp("private-place"))


def _square_png() -> bytes:
    img = Image.new("RGB", (40, 40), (230, 230, 250))
    img.paste((20, 60, 20), (10, 10, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _answers(c: TestClient, run_id: str) -> list[tuple[str, int, str]]:
    """(what was asked, status, the answer's text) for every route, good requests and bad."""
    png = _square_png()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    asked = {
        "GET /": lambda: c.get("/"),
        "GET /api/model": lambda: c.get("/api/model"),
        "GET /api/health": lambda: c.get("/api/health"),
        "GET /api/train": lambda: c.get("/api/train"),
        "GET /api/train/events": lambda: c.get("/api/train/events"),
        "predict, bytes": lambda: c.post("/api/predict", content=png, headers={"Content-Type": "image/png"}),
        "predict, data URL": lambda: c.post("/api/predict", json={"image": url, "model": run_id}),
        "predict, upload": lambda: c.post("/api/predict", files={"file": ("a.png", png, "image/png")}),
        "explain": lambda: c.post("/api/explain", json={"image": url}),
        "unknown model": lambda: c.post("/api/predict?model=nonesuch", content=png, headers={"Content-Type": "image/png"}),
        "unknown part": lambda: c.post("/api/explain?silence=conv9.x", content=png, headers={"Content-Type": "image/png"}),
        "not an image": lambda: c.post("/api/predict", content=b"GIF89a no", headers={"Content-Type": "image/gif"}),
        "not JSON": lambda: c.post("/api/train", content=b"{", headers={"Content-Type": "application/json"}),
        "an unknown data set": lambda: c.post("/api/train", json={"model": "basic_cnn", "budget": 15, "dataset": "cifar"}),
        "stop, nothing running": lambda: c.post("/api/train/stop", json={}),
        "no such file": lambda: c.get("/static/../../best.pt"),
        "a foreign host": lambda: c.get("/api/model", headers={"Host": "attacker.example"}),
        "another origin": lambda: c.post("/api/train", json={}, headers={"Origin": "http://attacker.example"}),
    }
    return [(name, (r := ask()).status_code, r.text) for name, ask in asked.items()]


def _check(answers: list[tuple[str, int, str]], private: list[str]) -> None:
    for name, status, text in answers:
        assert status < 500, (name, status, text[:200])
        for p in private:
            assert p not in text, (name, p, text[:300])


def test_a_folder_model_is_named_not_located(folder_run, reliability):
    place = folder_run.parent.parent  # holds shapes/ (the data set) and runs/
    with TestClient(create_app([folder_run]), base_url="http://127.0.0.1") as c:
        [info] = c.get("/api/model").json()["models"]
        assert info["dataset"] == info["data_title"] == "imagefolder:shapes"
        assert info["classes"] == ["circle", "square", "triangle"] and info["id"] == folder_run.name
        r = c.post("/api/predict", content=_square_png(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and Image.open(io.BytesIO(base64.b64decode(r.json()["image"].split(",")[1]))).size == (SIZE, SIZE)
        answers = _answers(c, folder_run.name)
    _check(answers, [str(place), str(folder_run), place.name])
    reliability("web API, paths", "every route, good requests and bad, on a model trained on an image folder",
                len(answers), "no answer names the folder's or the run's place; the data set is 'imagefolder:shapes'")


def test_a_folder_model_found_under_the_runs_folder_is_named_not_located(folder_run):
    place = folder_run.parent.parent
    app = create_app(runs_root=folder_run.parent)
    assert app.state.skipped == []
    with TestClient(app, base_url="http://127.0.0.1") as c:
        listing = c.get("/api/model").json()
        assert [m["dataset"] for m in listing["models"]] == ["imagefolder:shapes"]
        answers = _answers(c, folder_run.name)
    _check(answers, [str(place), place.name])
    assert str(place) not in json.dumps(listing)


def test_a_training_error_reaches_the_page_without_any_absolute_path(tmp_path):
    # The training process's first error line goes to the page: the runs folder is shown by its name, and any other
    # place (a data set's files, a library's) by its last part.
    from cnnlab.serve.training import Trainer

    trainer = Trainer(tmp_path / "runs", lambda run_dir: run_dir.name)
    lines = [f"cannot read {tmp_path}/data/train-images-idx3-ubyte.gz (Permission denied)",
             f"imagefolder {tmp_path}/photos: 3 file(s) cannot be read",
             f"{tmp_path}/runs/20261206-120000-resnet is finished",
             "path='/etc/passwd' in /usr/lib/python3/dist-packages/x.py, line 3"]
    shown = [trainer._no_paths(line) for line in lines]
    assert shown == ["cannot read train-images-idx3-ubyte.gz (Permission denied)", "imagefolder photos: 3 file(s) cannot be read",
                     "runs/20261206-120000-resnet is finished", "path='passwd' in x.py, line 3"]
