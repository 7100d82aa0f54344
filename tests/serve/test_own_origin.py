"""The API answers the page alone: a request naming a host the server was not started on is refused (DNS
rebinding), and an order that changes something is refused when a browser says another origin's page sent it, or
when it is not JSON. Plain HTTP clients here, on a real server; test_cross_origin_browser.py tries the same from a
page of another origin in Chromium."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.serve.server import host_names, split_host  # noqa: E402

from ..support.servers import live_server  # noqa: E402

ORDER = {"model": "basic_cnn", "budget": 15}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A live server that may train (nothing is served yet), and its port."""
    app = create_app(runs_root=tmp_path_factory.mktemp("runs"))
    with live_server(app) as port:
        yield app, port


def _nothing_started(app, port: int) -> None:
    assert app.state.trainer.job is None  # the Trainer never launched a process
    assert httpx.get(f"http://127.0.0.1:{port}/api/train").json()["state"] == "idle"


def test_a_foreign_host_name_is_refused_on_every_route(served, reliability):
    app, port = served
    base = f"http://127.0.0.1:{port}"
    tries = [("GET", "/"), ("GET", "/api/model"), ("GET", "/api/train"), ("GET", "/api/train/events"),
             ("GET", "/static/train.js"), ("GET", "/nothing"), ("POST", "/api/train"), ("POST", "/api/train/stop")]
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.attacker.example:80"):
        for method, path in tries:
            r = httpx.request(method, base + path, headers={"Host": host}, json=ORDER if method == "POST" else None)
            assert r.status_code == 403, (host, method, path, r.status_code)
            assert "does not answer to the name" in r.json()["error"] and "\n" not in r.json()["error"]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "localhost.:1"):
        assert httpx.get(base + "/api/health", headers={"Host": host}).json() == {"status": "ok"}, host
    _nothing_started(app, port)
    reliability("web API, foreign names", "4 Host names that are not the server's (DNS rebinding), on 8 routes",
                4 * len(tries), "each a 403 with one line; the loopback names, any port, answered; nothing started")


def test_a_request_without_a_host_or_with_a_malformed_one_is_refused(served):
    _, port = served
    for head in (b"GET /api/health HTTP/1.0\r\n\r\n", b"GET /api/health HTTP/1.0\r\nHost: a b\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.split(b"\r\n", 1)[0].split()[1] == b"400", answer[:200]
        assert b'"error"' in answer


ANOTHER_ORIGIN = {  # name: headers a browser sends with a request from a page of another origin
    "another host": {"Origin": "http://attacker.example"},
    "another port": {"Origin": "http://127.0.0.1:1"},
    "another scheme": {"Origin": "https://127.0.0.1:{port}"},
    "localhost for 127.0.0.1": {"Origin": "http://localhost:{port}"},
    "an opaque origin": {"Origin": "null"},
    "cross-site by fetch metadata": {"Sec-Fetch-Site": "cross-site"},
    "same-site by fetch metadata": {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:{port}"},
}


@pytest.mark.parametrize("route", ["/api/train", "/api/train/stop"])
def test_an_order_from_another_origin_is_refused(served, route, reliability):
    app, port = served
    for name, headers in ANOTHER_ORIGIN.items():
        headers = {k: v.format(port=port) for k, v in headers.items()}
        r = httpx.post(f"http://127.0.0.1:{port}{route}", json=ORDER, headers=headers)
        assert r.status_code == 403, (name, r.status_code, r.text)
        assert "another" in r.json()["error"], r.text
    # An image request comes from the page alone too, though it changes nothing.
    r = httpx.post(f"http://127.0.0.1:{port}/api/predict", content=b"x", headers={"Origin": "http://attacker.example",
                                                                                   "Content-Type": "image/png"})
    assert r.status_code == 403
    _nothing_started(app, port)
    reliability(f"web API {route}, other origins", ", ".join(ANOTHER_ORIGIN), len(ANOTHER_ORIGIN),
                "each a 403 with one line; nothing started")


NOT_JSON = {  # what a page of another origin can send without a CORS preflight, and what else is not JSON
    "text/plain": "text/plain",
    "text/plain holding JSON": "text/plain;charset=UTF-8",
    "a form": "application/x-www-form-urlencoded",
    "a multipart form": "multipart/form-data; boundary=x",
    "no type at all": None,
    "JSON's type as a parameter": "text/plain; type=application/json",
}


@pytest.mark.parametrize("route", ["/api/train", "/api/train/stop"])
def test_an_order_that_is_not_json_is_refused_with_415(served, route, reliability):
    app, port = served
    for name, kind in NOT_JSON.items():
        headers = {"Content-Type": kind} if kind else {}
        r = httpx.post(f"http://127.0.0.1:{port}{route}", content=b'{"model": "basic_cnn", "budget": 15}', headers=headers)
        assert r.status_code == 415, (name, r.status_code, r.text)
        assert "application/json" in r.json()["error"]
    _nothing_started(app, port)
    reliability(f"web API {route}, not JSON", ", ".join(NOT_JSON), len(NOT_JSON),
                "each a 415 naming application/json; nothing started")


def test_the_page_s_own_orders_and_plain_clients_pass_the_checks(served):
    """Same origin and JSON, or no Origin at all (curl, a script): the order is read. A stop with nothing running
    (409) and a start with a budget out of range (422) show it, and start nothing."""
    app, port = served
    base = f"http://127.0.0.1:{port}"
    own = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    for headers in (own, {}, {"Sec-Fetch-Site": "none"}, {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}):
        r = httpx.post(f"{base}/api/train/stop", json={}, headers=headers)
        assert r.status_code == 409 and "no training" in r.json()["error"], (headers, r.text)
        r = httpx.post(f"{base}/api/train", json={**ORDER, "budget": 5}, headers=headers)
        assert r.status_code == 422 and "budget" in r.json()["error"], (headers, r.text)
    # A stop's body may be empty (curl -X POST -H 'Content-Type: application/json'), but not other than JSON.
    assert httpx.post(f"{base}/api/train/stop", headers={"Content-Type": "application/json"}).status_code == 409
    assert httpx.post(f"{base}/api/train/stop", content=b"stop", headers={"Content-Type": "application/json"}).status_code == 400
    # Reading needs no Origin check: the page's GETs carry none, and a browser keeps another origin from reading.
    assert httpx.get(f"{base}/api/model", headers={"Origin": "http://attacker.example"}).status_code == 200
    _nothing_started(app, port)


def test_a_cross_origin_preflight_is_never_granted(served):
    _, port = served
    r = httpx.options(f"http://127.0.0.1:{port}/api/train", headers={
        "Origin": "http://attacker.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code >= 400 and "access-control-allow-origin" not in r.headers


def test_the_names_a_server_answers_to(tmp_path):
    assert host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"} == host_names("localhost") == host_names("::1")
    assert host_names("0.0.0.0") == {"0.0.0.0", "127.0.0.1", "localhost", "::1"}
    assert host_names("192.0.2.10") == {"192.0.2.10"}  # an address of the network: its own name alone
    assert host_names("192.0.2.10", ["Lab.Example.", "[2001:db8::1]"]) == {"192.0.2.10", "lab.example", "2001:db8::1"}
    with pytest.raises(ValueError, match="not a host name"):
        host_names("127.0.0.1", ["http://lab.example/"])
    assert split_host("[::1]:8765") == ("::1", 8765) and split_host("LAB.example:80") == ("lab.example", 80)
    for bad in ("", "a b", "user@host", "host/path", "host:99999", "host:x", "::1"):
        assert split_host(bad) is None, bad

    # a name given with allow_hosts is answered, and only the names of the server
    with TestClient(create_app(runs_root=tmp_path, host="192.0.2.10", allow_hosts=["lab.example"]),
                    base_url="http://lab.example:8000") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"Host": "192.0.2.10"}).status_code == 200
        for host in ("127.0.0.1", "localhost", "testserver", "lab.example.attacker.example"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 403, host


def test_serve_takes_allow_host_names_and_refuses_one_with_a_port(capsys):
    from cnnlab.cli import build_parser, main

    args = build_parser().parse_args(["serve", "--allow-host", "Lab.Example", "--allow-host", "192.0.2.10"])
    assert args.allow_host == ["lab.example", "192.0.2.10"]
    assert build_parser().parse_args(["serve"]).allow_host == []
    with pytest.raises(SystemExit) as e:
        main(["serve", "--allow-host", "lab.example:8000"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--allow-host" in err and "without a port" in err and "Traceback" not in err
