"""A runs folder may come from someone else: a finished run whose config.json is a named pipe or a link to
/dev/zero is passed by, and named with the reason, while `cnnlab serve` starts at once and serves the good ones."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402

from ..support.processes import cnnlab_serve  # noqa: E402
from ..support.servers import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="needs named pipes and /dev/zero")

START_SECONDS = 30.0  # far more than create_app takes on three runs (a second or two): a hang shows as a failure


@pytest.fixture
def planted(tiny_run, tmp_path) -> Path:
    """A runs folder: one good finished run, then two copies of it whose config.json is a named pipe with no
    writer ("a-pipe") and a link to /dev/zero ("b-zero"), sorted before it so that they are met first."""
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "c-good")
    for name in ("a-pipe", "b-zero"):
        shutil.copytree(tiny_run, root / name)
        (root / name / "config.json").unlink()
    os.mkfifo(root / "a-pipe" / "config.json")
    (root / "b-zero" / "config.json").symlink_to("/dev/zero")
    return root


def test_create_app_passes_planted_config_files_by_and_names_them(planted, reliability):
    made: dict = {}
    maker = threading.Thread(target=lambda: made.setdefault("app", create_app(runs_root=planted)), daemon=True)
    t0 = time.monotonic()
    maker.start()
    maker.join(START_SECONDS)
    # A thread stuck on the pipe is left there (a daemon): released, it would go on to read /dev/zero whole.
    assert not maker.is_alive(), f"create_app did not return within {START_SECONDS:.0f} s"
    app = made["app"]
    skipped = app.state.skipped
    assert len(skipped) == 2, skipped
    assert skipped[0].startswith("a-pipe: ") and "config.json is a named pipe" in skipped[0], skipped
    assert skipped[1].startswith("b-zero: ") and "config.json is a device" in skipped[1], skipped
    assert all("\n" not in line for line in skipped)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert [m["id"] for m in c.get("/api/model").json()["models"]] == ["c-good"]
    reliability("cnnlab serve, planted runs", "a finished run's config.json made a named pipe, another's a link to "
                "/dev/zero, beside a good run", 2, f"both passed by and named with the reason; the good run served; "
                f"started in {time.monotonic() - t0:.1f} s")


@pytest.mark.processes  # cnnlab serve in a process of its own
def test_cnnlab_serve_says_which_runs_it_passed_by_and_serves(planted):
    port = free_port()
    with cnnlab_serve(["--runs-root", str(planted), "--port", str(port), "--allow-host", "lab.example"]) as text:
        assert "cnnlab serve: skipped a-pipe: config.json is a named pipe" in text, text
        assert "cnnlab serve: skipped b-zero: config.json is a device" in text, text
        assert f"cnnlab serve: c-good at http://127.0.0.1:{port}/" in text, text
        assert "Traceback" not in text
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 30
        while True:  # the line comes just before uvicorn listens
            try:
                r = httpx.get(f"{base}/api/model", headers={"Host": f"lab.example:{port}"}, timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < end
                time.sleep(0.1)
        assert r.status_code == 200 and [m["id"] for m in r.json()["models"]] == ["c-good"]
        assert httpx.get(f"{base}/api/model", headers={"Host": "attacker.example"}, timeout=10).status_code == 403
