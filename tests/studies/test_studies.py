"""The studies of the reading list: the small versions run end to end on the real MNIST, a stopped study continues
without training its finished runs again, and the verdicts say what the numbers say."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cnnlab.studies.identity import agreement, verdicts
from cnnlab.studies.runner import Outcome, compare, mean_sd

from ..support.cli import run_cli

SMALL = ["--small", "--variants", "original", "scaling", "preact"]


def _outcome(model: str, error: float | None, seed: int = 0, dataset: str = "mnist", loss: float | None = 0.1) -> Outcome:
    return Outcome(f"{dataset}-{model}-s{seed}", model, "depth=8,width=4", dataset, seed, 100, 10, 1.0,
                   loss if error is not None else None, error, diverged_at=None if error is not None else 5)


def test_compare_needs_the_means_apart_by_more_than_both_spreads():
    assert compare([1.0, 1.1, 1.2], [2.0, 2.1, 2.2]) == "better"
    assert compare([2.0, 2.1, 2.2], [1.0, 1.1, 1.2]) == "worse"
    assert compare([1.0, 1.5, 2.0], [1.2, 1.6, 2.1]) == "same"
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([4.0]) == (4.0, 0.0)


def test_a_diverged_run_counts_as_chance_and_agreement_is_per_data_set():
    outcomes = [_outcome("res_original", e, s) for s, e in enumerate((1.0, 1.1, 0.9))]
    outcomes += [_outcome("res_scaling", e, s) for s, e in enumerate((None, 1.2, 1.0))]  # one seed diverged
    outcomes += [_outcome("res_original", e, s, "fashion-mnist") for s, e in enumerate((8.0, 8.2, 8.1))]
    outcomes += [_outcome("res_scaling", e, s, "fashion-mnist") for s, e in enumerate((8.1, 8.0, 8.2))]
    ours = verdicts(outcomes, ["mnist", "fashion-mnist"], "scaling")
    assert ours == {"mnist": "worse", "fashion-mnist": "same"}
    assert agreement("worse", ours) == "partly"
    assert agreement("worse", {"mnist": "worse"}) == "yes" and agreement("better", {"mnist": "worse"}) == "no"
    assert agreement("", ours) == "-"


@pytest.mark.real_data
def test_the_small_identity_mappings_study_writes_its_table_curves_and_gradients(capsys, tmp_path):
    out = tmp_path / "study"
    code, stdout, err = run_cli(capsys, "study", "identity-mappings", *SMALL, "--out", str(out))
    assert code == 0, err
    page = (out / "README.md").read_text()
    for v in ("original", "scaling", "preact"):
        assert f"`res_{v}`" in page
    assert "12.35% (Table 1, constant scaling 0.5 on the shortcut, 0.5 on F (frozen gating))" in page
    assert "6.37% (Table 2, full pre-activation)" in page
    assert "3 of 3 runs" in page and "cnnlab study identity-mappings --seeds 1 --datasets mnist --depth 8" in page
    rows = [ln for ln in page.splitlines() if ln.startswith("| `res_")]
    assert len(rows) == 3 and all(ln.count("|") == 8 for ln in rows)  # unit, paper, verdict, loss, error, ours, agrees
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "gradients.png").stat().st_size > 10_000
    results = sorted((out / "results").glob("*.json"))
    assert len(results) == 3
    for path in results:
        o = Outcome.read(path)
        assert o.steps == 30 and 0 < o.test_error < 100 and o.train_loss > 0
        assert o.curve[-1][0] == 30 and len(o.curve) == 3  # a point every 10 steps
        assert len(o.grad_init) == len(o.grad_trained) == 4 and o.grad_init[-1] == 1.0  # 3 units, then the output
    assert stdout.count("| `res_") == 3  # the table, printed


@pytest.mark.real_data
def test_a_study_directory_refuses_other_settings(capsys, tmp_path):
    out = tmp_path / "study"
    assert run_cli(capsys, "study", "identity-mappings", "--small", "--variants", "original", "--out", str(out))[0] == 0
    code, _, err = run_cli(capsys, "study", "identity-mappings", "--small", "--variants", "original", "--steps", "40",
                           "--out", str(out))
    assert code == 1
    assert err.strip().count("\n") == 0 and "holds the study 'identity-mappings'" in err and "another --out" in err
    result = next((out / "results").glob("*.json"))
    result.write_text("{not json")  # a damaged outcome is named, not a traceback
    code, _, err = run_cli(capsys, "study", "identity-mappings", "--small", "--variants", "original", "--out", str(out))
    assert code == 1 and err.strip().count("\n") == 0 and f"{result} cannot be read" in err


@pytest.mark.real_data
@pytest.mark.processes
def test_a_stopped_study_continues_without_training_its_finished_runs_again(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "cnnlab", "study", "identity-mappings", *SMALL, "--out", str(out)]
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &`) ignores SIGINT, its children
    # inherit that, and Python then installs no KeyboardInterrupt, so the study would run to its end
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list((out / "results").glob("*.json")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    first = sorted((out / "results").glob("*.json"))
    if p.returncode == 0:  # it finished between our look and the signal: nothing was stopped
        pytest.skip("the study ended before it could be stopped")
    assert p.returncode == 130, err
    assert f"the finished runs are kept in {out}; the same command continues the study" in err
    assert 1 <= len(first) < 3
    kept = {path.name: (path.read_bytes(), os.stat(path).st_mtime_ns) for path in first}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({len(first)} finished before)" in done.stdout
    for path in first:  # not trained again: the same outcome, the file untouched
        assert (path.read_bytes(), os.stat(path).st_mtime_ns) == kept[path.name]
    assert len(list((out / "results").glob("*.json"))) == 3
    plan = json.loads((out / "plan.json").read_text())
    assert [j["model"] for j in plan["jobs"]] == ["res_original", "res_scaling", "res_preact"]


@pytest.mark.real_data
def test_the_small_densenet_study_sets_densenet_beside_the_residual_family_at_equal_time(capsys, tmp_path):
    out = tmp_path / "dense"
    code, stdout, err = run_cli(capsys, "study", "densenet", "--small", "--out", str(out))
    assert code == 0, err
    page = (out / "README.md").read_text()
    assert "`densenet_bc` (depth=10,growth=4,compression=0.5)" in page
    assert "`res_preact` (depth=8,width=4)" in page and "`res_original` (depth=8,width=4)" in page
    assert "| DenseNet-BC (k=12), depth 100 | 0.8M | 4.51% |" in page
    assert "with the paper's claim" in page
    plan = json.loads((out / "plan.json").read_text())
    steps = {j["model"]: j["steps"] for j in plan["jobs"]}
    assert all(n >= 1 for n in steps.values()) and len(steps) == 3
    # The steps were timed once and kept: the same command reads them back instead of timing again.
    again = run_cli(capsys, "study", "densenet", "--small", "--out", str(out))
    assert again[0] == 0 and json.loads((out / "plan.json").read_text()) == plan


def test_bad_study_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "study", "resnext")
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        run_cli(capsys, "study", "identity-mappings", "--depth", "7")
    with pytest.raises(SystemExit):
        run_cli(capsys, "study", "identity-mappings", "--variants", "nope")
    assert "invalid choice: 'nope'" in capsys.readouterr().err
