"""`cnnlab serve` with no run serves the best finished run of each model: the best validation accuracy (what each run
chose its own best epoch by, never the test accuracy), the newest of equals; it says which it serves and why, and
the API and the page say when a newer finished run exists."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from cnnlab.runs.rundir import best_finished, newest_finished

DAY = 86_400.0
T0 = time.time() - 30 * DAY  # the runs below finished a month ago, a day apart


def _fake_run(root: Path, name: str, model: str = "resnet", val: float | None = 0.99, test: float | None = 0.98,
              day: int = 0, dataset: str = "mnist") -> Path:
    """A finished run's record files (no weights: the choice reads only config.json and summary.json), its
    summary.json written `day` days after T0."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": model, "dataset": dataset}))
    (path / "summary.json").write_text(json.dumps({"model": model, "best_val_acc": val, "test_acc": test}))
    (path / "best.pt").write_bytes(b"")
    os.utime(path / "summary.json", (T0 + day * DAY, T0 + day * DAY))
    return path


def _chosen(root: Path, skipped: list[str] | None = None) -> dict[str, object]:
    return {f"{c.run.model}/{c.run.dataset}": c for c in best_finished(root, skipped)}


# ---- the choice ---------------------------------------------------------------------------------------------------

def test_the_best_validation_accuracy_beats_the_newest_run(tmp_path):
    best = _fake_run(tmp_path, "a", val=0.9957, day=1)
    newest = _fake_run(tmp_path, "b", val=0.9930, day=3)
    _fake_run(tmp_path, "c", val=0.9901, day=2)
    [chosen] = best_finished(tmp_path)
    assert chosen.run.path == best
    assert chosen.runs == 3 and chosen.newer is not None and chosen.newer.path == newest
    assert chosen.newer.val_acc == pytest.approx(0.9930)
    assert chosen.why == "best validation accuracy 99.57% of 3 finished runs"
    assert newest_finished(tmp_path) == [newest]  # the newest is still known as such


def test_the_test_accuracy_never_chooses(tmp_path):
    chosen_by_val = _fake_run(tmp_path, "a", val=0.99, test=0.90, day=1)
    _fake_run(tmp_path, "b", val=0.98, test=0.999, day=2)
    assert best_finished(tmp_path)[0].run.path == chosen_by_val


def test_of_equal_validation_accuracies_the_newest_wins(tmp_path):
    _fake_run(tmp_path, "a", val=0.99, day=1)
    newest = _fake_run(tmp_path, "b", val=0.99, day=2)
    _fake_run(tmp_path, "c", val=0.95, day=3)
    [chosen] = best_finished(tmp_path)
    assert chosen.run.path == newest and chosen.tied == 1
    assert chosen.newer.path == tmp_path / "c"
    assert "tied with 1 other: the newest of them" in chosen.why


def test_runs_without_a_hold_out_rank_last_and_among_themselves_by_age(tmp_path):
    with_val = _fake_run(tmp_path, "a", val=0.90, day=1)
    _fake_run(tmp_path, "b", val=None, test=0.999, day=2)  # trained with --val-size 0: nothing to rank it by
    [chosen] = best_finished(tmp_path)
    assert chosen.run.path == with_val and chosen.unranked == 1
    assert chosen.why == "best validation accuracy 90.00% of 2 finished runs (1 without a validation accuracy ranked last)"

    alone = tmp_path / "none"
    _fake_run(alone, "old", val=None, day=1)
    newest = _fake_run(alone, "new", val=None, day=2)
    _fake_run(alone, "nan", val=float("nan"), day=0)  # what an older summary may hold: no accuracy either
    [chosen] = best_finished(alone)
    assert chosen.run.path == newest and chosen.newer is None
    assert chosen.why.startswith("the newest of 3 finished runs: none has a validation accuracy")


def test_each_model_on_each_data_set_is_chosen_on_its_own(tmp_path):
    _fake_run(tmp_path, "a", "resnet", val=0.99)
    _fake_run(tmp_path, "b", "resnet", val=0.91, dataset="fashion-mnist")
    _fake_run(tmp_path, "c", "inception_net", val=0.98)
    chosen = _chosen(tmp_path)
    assert sorted(chosen) == ["inception_net/mnist", "resnet/fashion-mnist", "resnet/mnist"]
    assert all(c.why == "the only finished run" and c.newer is None for c in chosen.values())


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs named pipes and /dev/zero")
def test_unreadable_runs_are_passed_by_and_named(tmp_path):
    good = _fake_run(tmp_path, "z-good", val=0.5)
    for name in ("a-pipe", "b-zero", "c-not-json", "d-no-model", "e-list"):
        _fake_run(tmp_path, name, val=1.0)  # each would win, were it read
    (tmp_path / "a-pipe" / "summary.json").unlink()
    os.mkfifo(tmp_path / "a-pipe" / "summary.json")
    (tmp_path / "b-zero" / "config.json").unlink()
    (tmp_path / "b-zero" / "config.json").symlink_to("/dev/zero")
    (tmp_path / "c-not-json" / "summary.json").write_text("{nope")
    (tmp_path / "d-no-model" / "config.json").write_text("{}")
    (tmp_path / "e-list" / "summary.json").write_text("[1.0]")
    unfinished = _fake_run(tmp_path, "f-stopped", val=1.0)
    (unfinished / "summary.json").unlink()  # a stopped run is no candidate, and not a broken one either
    skipped: list[str] = []
    [chosen] = best_finished(tmp_path, skipped)
    assert chosen.run.path == good and chosen.runs == 1
    assert [line.split(":")[0] for line in skipped] == ["a-pipe", "b-zero", "c-not-json", "d-no-model", "e-list"]
    assert "summary.json is a named pipe" in skipped[0] and "config.json is a device" in skipped[1], skipped
    assert "summary.json is not JSON" in skipped[2] and "names no model" in skipped[3] and "not a mapping" in skipped[4]
    assert all("\n" not in line and str(tmp_path) not in line for line in skipped)
    assert best_finished(tmp_path / "absent") == []


# ---- what the server serves and says -----------------------------------------------------------------------------

def _as_run(tiny_run: Path, root: Path, name: str, val: float, day: int) -> Path:
    """A copy of a real finished run (weights and all), its validation accuracy and finishing time rewritten."""
    path = root / name
    shutil.copytree(tiny_run, path)
    summary = json.loads((path / "summary.json").read_text())
    summary["best_val_acc"] = val
    (path / "summary.json").write_text(json.dumps(summary))
    os.utime(path / "summary.json", (T0 + day * DAY, T0 + day * DAY))
    return path


@pytest.fixture
def three_runs(tiny_run, tmp_path) -> Path:
    """Three finished basic_cnn runs: the best ("b-best") is neither the newest ("c-newest") nor the oldest."""
    root = tmp_path / "runs"
    _as_run(tiny_run, root, "a-oldest", 0.40, 1)
    _as_run(tiny_run, root, "b-best", 0.50, 2)
    _as_run(tiny_run, root, "c-newest", 0.30, 3)
    return root


def test_the_api_serves_the_best_run_and_names_the_newer_one(three_runs):
    TestClient = pytest.importorskip("fastapi.testclient").TestClient

    from cnnlab.serve.app import create_app

    app = create_app(runs_root=three_runs)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        [entry] = c.get("/api/model").json()["models"]
        assert entry["id"] == "b-best" and entry["val_accuracy"] == pytest.approx(0.50)
        newer = entry["newer_run"]
        assert newer["id"] == "c-newest" and newer["val_accuracy"] == pytest.approx(0.30)
        assert newer["finished"] == pytest.approx(T0 + 3 * DAY) and newer["test_accuracy"] is not None
        assert str(three_runs) not in json.dumps(entry)  # no server path

        # a run trained from the page is served at once, beside the chosen one, as the training's end serves it
        trained_here = _as_run(three_runs / "c-newest", three_runs, "d-trained-here", 0.20, 4)
        assert app.state.trainer.serve(trained_here) == "d-trained-here"
        listed = {m["id"]: m for m in c.get("/api/model").json()["models"]}
        assert set(listed) == {"b-best", "d-trained-here"} and listed["d-trained-here"]["newer_run"] is None


def test_a_named_run_is_served_as_named_without_a_choice(three_runs):
    TestClient = pytest.importorskip("fastapi.testclient").TestClient

    from cnnlab.serve.app import create_app

    with TestClient(create_app([three_runs / "c-newest"]), base_url="http://127.0.0.1") as c:
        [entry] = c.get("/api/model").json()["models"]
    assert entry["id"] == "c-newest" and entry["newer_run"] is None and entry["val_accuracy"] is None


def test_the_command_line_says_which_run_it_serves_and_why(three_runs):
    from cnnlab.cli.serve import chosen_lines
    from cnnlab.serve.app import create_app

    lines = chosen_lines(create_app(runs_root=three_runs).state.shelf.served())
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0 + 3 * DAY))
    assert lines == [
        f"basic_cnn on mnist: {three_runs / 'b-best'} (best validation accuracy 50.00% of 3 finished runs)",
        f"basic_cnn on mnist: not serving the newer {three_runs / 'c-newest'} (validation accuracy 30.00%, finished {when})",
    ]


@pytest.mark.processes  # cnnlab serve in a process of its own
def test_cnnlab_serve_prints_its_choice(three_runs):
    from ..support.processes import cnnlab_serve
    from ..support.servers import free_port

    port = free_port()
    with cnnlab_serve(["--runs-root", str(three_runs), "--port", str(port)]) as text:
        assert (f"cnnlab serve: basic_cnn on mnist: {three_runs / 'b-best'} (best validation accuracy 50.00% of 3 "
                "finished runs)\n") in text, text
        assert f"cnnlab serve: basic_cnn on mnist: not serving the newer {three_runs / 'c-newest'} (" in text, text
        assert f"cnnlab serve: b-best at http://127.0.0.1:{port}/" in text, text


@pytest.mark.browser
def test_the_page_says_a_newer_run_exists(three_runs):
    from cnnlab.serve.app import create_app

    from ..support.browser import chromium
    from ..support.servers import live_server

    with live_server(create_app(runs_root=three_runs)) as port, chromium() as browser:
        page = browser.new_context(locale="en-US").new_page()
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_function("document.body.dataset.model === 'b-best'")
        assert page.is_visible("#model-note")
        note = page.inner_text("#model-note")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0 + 3 * DAY))  # the browser's zone is this machine's
        assert "c-newest" in note and "30.00%" in note and when in note and "50.00%" in note, note
        assert "best validation accuracy" in note
        page.click("#lang")
        assert "更新的训练" in page.inner_text("#model-note") and "c-newest" in page.inner_text("#model-note")
