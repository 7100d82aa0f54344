"""A training order's budget of any size, sign or kind gets a 4xx, never a 5xx: JSON integers have no size limit
but the parser's digit count, and one beyond a float's range is still a number to check."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.serve.inputs import RequestError, number_field  # noqa: E402

BUDGETS = {  # name: (the budget as JSON text, the status)
    "1 and 309 zeros": ("1" + "0" * 309, 422),
    "-1 and 309 zeros": ("-1" + "0" * 309, 422),
    "10**4000 (within the parser's 4,300 digits)": ("1" + "0" * 4000, 422),
    "-10**4000": ("-1" + "0" * 4000, 422),
    "5,000 digits (beyond the parser's limit)": ("9" * 5000, 400),
    "1e400 (infinite as a float)": ("1e400", 422),
    "-1e400": ("-1e400", 422),
    "1e-400 (zero as a float)": ("1e-400", 422),
    "1e308, a float within range but not the budget's": ("1e308", 422),
    "a float of 300 digits": ("1" + "0" * 300 + ".5", 422),
    "2**63": (str(2**63), 422),
    "-0": ("-0", 422),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(runs_root=tmp_path_factory.mktemp("runs")), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as c:
        yield c


def test_a_budget_of_any_size_is_a_4xx_and_nothing_starts(client, reliability):
    for name, (budget, status) in BUDGETS.items():
        body = b'{"model": "basic_cnn", "budget": ' + budget.encode() + b"}"
        r = client.post("/api/train", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        error = r.json()["error"]
        assert "\n" not in error and len(error) < 300, (name, error)  # one line, not thousands of digits
        if status == 422:
            assert "15" in error and "300" in error, error
    assert client.get("/api/train").json()["state"] == "idle"
    assert client.get("/api/health").json() == {"status": "ok"}
    reliability("web API /api/train", "budgets of any size: " + ", ".join(BUDGETS), len(BUDGETS),
                "each a 400 or 422 in one line; never 5xx; nothing started")


def test_a_budget_within_range_is_taken_as_given():
    assert number_field({"budget": 15}, "budget", 15, 300) == 15.0
    assert number_field({"budget": 299.5}, "budget", 15, 300) == 299.5
    assert number_field({"budget": 300}, "budget", 15, 300) == 300.0
    for outside in (10**309, -(10**309), 14, 301, 300.0001, float("inf"), float("nan")):
        with pytest.raises(RequestError) as e:
            number_field({"budget": outside}, "budget", 15, 300)
        assert e.value.status == 422
