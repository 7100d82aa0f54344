"""POST /api/design: a design's cost, counted on the network built from it, beside the lecture's; bad designs answered
422 with a code the page words in each language; a training order's design checked before anything starts, and
carried into the run it trains."""

from __future__ import annotations

import base64
import io
import re
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.analysis.cost import cost_rows, forward_flops  # noqa: E402
from cnnlab.models import DesignError, count_parameters, create_model  # noqa: E402
from cnnlab.models.designed import BRANCHES, KINDS, LECTURE  # noqa: E402
from cnnlab.runs import load_run  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402

from ..support.servers import live_server, read_events  # noqa: E402

STATIC = Path(__file__).resolve().parents[2] / "src" / "cnnlab" / "serve" / "static"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(runs_root=tmp_path_factory.mktemp("runs")), base_url="http://127.0.0.1") as c:
        yield c


def _analysed(spec: str | None, model: str = "designed") -> dict:
    """What analysis/cost.py says of the network: parameters, multiply-adds, each branch's multiply-adds."""
    network = create_model(model, block=spec) if spec else create_model(model)
    rows = cost_rows(network)
    return {"parameters": count_parameters(network), "macs": forward_flops(network) // 2,
            "per_branch": {r.name: (r.parameters, r.macs) for r in rows if r.kind == "branch"}}


@pytest.mark.parametrize("spec", [LECTURE["inception"], "inception:1x1=16,5x5=24,3x3dbl=16>24>24,pool=24",
                                  "inception: pool=8, 5x5=4>24", "residual:8,noskip", LECTURE["residual"]])
def test_a_design_is_answered_with_the_cost_of_the_network_built_from_it(client, spec):
    r = client.post("/api/design", json={"design": spec})
    assert r.status_code == 200, r.text
    answer = r.json()
    canonical = re.sub(r"\s", "", spec)
    assert answer["design"] == create_model("designed", block=spec).design.spec
    assert answer["model"] == "designed" and answer["kind"] == canonical.split(":")[0]
    expected = _analysed(spec)
    assert answer["parameters"] == expected["parameters"] and answer["macs"] == expected["macs"]
    assert {b["name"]: (b["parameters"], b["macs"]) for b in answer["per_branch"]} == expected["per_branch"]
    assert sum(b["parameters"] for b in answer["per_block"]) < answer["parameters"]  # the convs and the head besides
    lecture = answer["lecture"]
    name = "inception_net" if answer["kind"] == "inception" else "resnet"
    analysed = _analysed(None, name)
    assert lecture["model"] == name and lecture["design"] == LECTURE[answer["kind"]]
    assert (lecture["parameters"], lecture["macs"]) == (analysed["parameters"], analysed["macs"])
    assert lecture["parameters"] == {"inception_net": 97_298, "resnet": 41_514}[name]
    if answer["kind"] == "residual":
        assert answer["per_branch"] == [] and [b["name"] for b in answer["per_block"]] == (
            ["rblock1", "rblock2"] if "noskip" not in spec else ["block1", "block2"])


def test_the_1x1_reduction_shows_in_the_5x5_branch(client):
    """The 5x5 branch with a narrow 1x1 reduction costs a fraction of one that convolves its input directly; at the
    lecture's widths the 16-channel "reduction" widens the block's 10 input channels, and costs more."""
    def branch_macs(spec):
        answer = client.post("/api/design", json={"design": spec}).json()
        return sum(b["macs"] for b in answer["per_branch"] if b["branch"] == "5x5")

    direct, reduced, lectures = branch_macs("inception:5x5=24"), branch_macs("inception:5x5=4>24"), branch_macs("inception:5x5=16>24")
    assert reduced < direct / 2 and lectures > direct


def test_a_model_another_thread_runs_meanwhile_leaves_the_count_as_it_is():
    """A server counts a design while its other threads run served models: the count is the same as alone. (torch's
    own table by module, which analysis/cost.py reads, follows every thread's modules: it got most of these wrong.)"""
    from cnnlab.serve.design import design_cost

    specs = [f"inception:1x1={w},5x5=3>{w + 1}" for w in range(40, 60)]  # asked of no other test: counted afresh
    alone = {spec: _analysed(spec) for spec in specs}
    other = create_model("designed", block="inception:1x1=64,5x5=64>64,3x3dbl=64>64>64,pool=64").eval()
    stop = threading.Event()

    def serve_another() -> None:
        with torch.no_grad():
            while not stop.is_set():
                other(torch.zeros(4, 1, 28, 28))

    thread = threading.Thread(target=serve_another)
    thread.start()
    try:
        counted = {spec: design_cost({"design": spec}) for spec in specs}
    finally:
        stop.set()
        thread.join()
    for spec, answer in counted.items():
        assert answer["macs"] == alone[spec]["macs"], spec
        assert {b["name"]: (b["parameters"], b["macs"]) for b in answer["per_branch"]} == alone[spec]["per_branch"], spec


BAD = {
    "unknown branch": ("inception:7x7=3", "design.branch"),
    "width out of range": ("inception:1x1=65", "design.width"),
    "no branch": ("inception:", "design.no_branch"),
    "another kind": ("vgg:3", "design.kind"),
    "three widths": ("inception:5x5=1>2>3", "design.widths"),
    "residual without skip": ("residual:16", "design.skip"),
    "unreadable": ("inception:1x1", "design.syntax"),
    "twice": ("inception:pool=3,pool=4", "design.repeated"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_design_is_a_422_with_its_code_and_parameters(client, name):
    spec, code = BAD[name]
    r = client.post("/api/design", json={"design": spec})
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["code"] == code and set(answer["params"]) == set(DesignError.CODES[code]) and answer["error"]


@pytest.mark.parametrize("body", [{}, {"design": 3}, {"design": ""}, {"design": "x" * 201}])
def test_an_order_without_a_design_as_text_is_a_400(client, body):
    r = client.post("/api/design", json=body)
    assert r.status_code == 400 and "design" in r.json()["error"]


def test_the_design_asks_only_for_json_from_the_page(client):
    assert client.post("/api/design", content=b'{"design": "residual:8,skip"}',
                       headers={"content-type": "text/plain"}).status_code == 415


BAD_ORDERS = {
    "a design for a model that takes none": ({"model": "resnet", "budget": 15, "block": LECTURE["residual"]},
                                              "design.not_taken"),
    "a design that cannot be built": ({"model": "designed", "budget": 15, "block": "inception:1x1=99"}, "design.width"),
    "a design of no branch": ({"model": "designed", "budget": 15, "block": "inception:"}, "design.no_branch"),
    "a depth a family cannot take": ({"model": "res_preact", "budget": 15, "block": "depth=21"}, "design.family"),
}


@pytest.mark.parametrize("name", list(BAD_ORDERS))
def test_a_training_order_with_a_bad_design_is_refused_and_nothing_starts(client, name):
    order, code = BAD_ORDERS[name]
    r = client.post("/api/train", json=order)
    assert r.status_code == 422 and r.json()["code"] == code, r.text
    assert client.get("/api/train").json()["state"] == "idle"


def test_every_design_error_has_words_in_both_languages():
    """The page shows a refused design in its reader's language: i18n.js holds error.<code> for each design code, in
    the English and the Chinese table, and every design.* key of one table in the other."""
    text = (STATIC / "i18n.js").read_text(encoding="utf-8")
    en, zh = text.split("\n  zh: {", 1)
    keys = lambda table: set(re.findall(r'^\s+"((?:design|error\.design)\.[^"]+)":', table, flags=re.M))  # noqa: E731
    assert keys(en) == keys(zh)
    for code in [*DesignError.CODES, "design.not_taken", "design.family"]:
        assert f"error.{code}" in keys(en), code
    used = set(re.findall(r'"(design\.[a-z0-9.]+)"', (STATIC / "design.js").read_text(encoding="utf-8")))
    used |= set(re.findall(r'data-i18n="(design\.[^"]+)"', (STATIC / "index.html").read_text(encoding="utf-8")))
    used |= {f"design.kind.{kind}" for kind in KINDS} | {f"design.branch.{branch}" for branch in BRANCHES}  # made by name
    assert used and used <= keys(en), sorted(used - keys(en))


def _digit_data_url() -> str:
    img = Image.new("L", (140, 140), 255)
    img.paste(0, (60, 20, 80, 120))  # a 1, dark on white as the page sends it
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_a_design_ordered_from_the_page_is_trained_recorded_and_served_with_its_branches(tmp_path):
    app = create_app(runs_root=tmp_path / "runs")
    with live_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/api/train", json={"model": "designed", "budget": 15, "block": "inception: pool=8, 1x1=4"})
        assert r.status_code == 202 and r.json()["block"] == "inception:1x1=4,pool=8", r.text
        stream = read_events(port)
        assert stream[-1][0] == "done", stream[-3:]
        started = next(d for n, d in stream if n == "started")
        assert started["block"] == "inception:1x1=4,pool=8"
        model_id = stream[-1][1]["model"]
        [served] = [m for m in httpx.get(f"{base}/api/model").json()["models"] if m["id"] == model_id]
        assert served["model"] == "designed" and served["block"] == "inception:1x1=4,pool=8"
        parts = ["incep1.1x1", "incep1.pool", "incep2.1x1", "incep2.pool"]
        assert [p["name"] for p in served["parts"]] == parts
        explained = httpx.post(f"{base}/api/explain", json={"image": _digit_data_url(), "model": model_id}, timeout=60)
        assert explained.status_code == 200, explained.text
        branches = [b["part"] for layer in explained.json()["layers"] for b in layer.get("branches", [])]
        assert branches == parts
        off = httpx.post(f"{base}/api/explain", json={"image": _digit_data_url(), "model": model_id,
                                                      "silence": ["incep2.pool"]}, timeout=60)
        assert off.status_code == 200 and off.json()["silenced"] == ["incep2.pool"]
    run = load_run(tmp_path / "runs" / model_id)
    assert run.config["model"] == "designed" and run.config["block"] == "inception:1x1=4,pool=8"
