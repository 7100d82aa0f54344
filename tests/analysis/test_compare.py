"""Comparing finished runs: the table and the figure, also when the shell pattern matches runs that never finished."""

from __future__ import annotations

import re
import shutil

import pytest

from cnnlab.cli import main
from cnnlab.train import fit, make_config


def _finished(tiny_mnist, root, model: str):
    cfg = make_config(model, epochs=1, batch_size=100, val_size=100, device="cpu")
    return fit(cfg, tiny_mnist, out_root=root, progress=False).run_dir


def test_compare_skips_unfinished_runs_naming_each_and_compares_the_rest(tiny_mnist, tmp_path, capsys, reliability):
    runs = tmp_path / "runs"
    done = [_finished(tiny_mnist, runs, m) for m in ("basic_cnn", "resnet")]
    stopped = runs / "20990101-000000-resnet"  # as a run stopped after its first epoch leaves it
    shutil.copytree(done[1], stopped)
    (stopped / "summary.json").unlink()
    empty = runs / "20990101-000001-resnet"  # as a run stopped before its first epoch leaves it
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    capsys.readouterr()
    code = main(["compare", *map(str, sorted(runs.iterdir())), "--out", str(tmp_path / "cmp.png")])
    out, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "cmp.png").stat().st_size > 0
    rows = [ln for ln in out.splitlines()[2:] if ln.strip() and not ln.startswith("curves")]
    assert [r.split()[0] for r in rows] == ["basic_cnn", "resnet"]
    skipped = err.splitlines()
    assert len(skipped) == 2 and all(ln.startswith("cnnlab compare: skipped: ") for ln in skipped), err
    (about_stopped,) = [ln for ln in skipped if str(stopped) in ln]
    assert f"cnnlab train --resume {stopped}" in about_stopped
    (about_empty,) = [ln for ln in skipped if str(empty) in ln]
    assert "missing summary.json, metrics.csv" in about_empty

    code = main(["compare", str(stopped), str(empty)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("cnnlab compare: error: none of the 2 directories")
    reliability("compare", "a shell pattern matching finished, stopped and empty run directories", 2,
                "the finished runs compared, one stderr line per skipped directory with its reason, exit 0; "
                "nothing finished: one error line, exit 1")


def _without_validation(tiny_mnist, root):
    """A run of the course's loop: no validation split, so its best epoch is its last."""
    cfg = make_config("basic_cnn", "course", steps=2, val_size=0, device="cpu")
    return fit(cfg, tiny_mnist, out_root=root, progress=False).run_dir


def test_a_run_without_validation_shows_a_dash_for_its_best_validation_accuracy_never_nan(tiny_mnist, tmp_path,
                                                                                          capsys):
    import json

    from ..support.cli import run_cli

    run = _without_validation(tiny_mnist, tmp_path / "runs")
    code, out, _ = run_cli(capsys, "compare", str(run), "--out", str(tmp_path / "cmp.png"))
    row = out.splitlines()[2].split()  # ... epochs, best val, test acc, train time
    assert code == 0 and not re.search(r"\bnan\b", out, re.I), out
    assert row[-3] == "-" and row[-2].endswith("%"), out

    # A summary.json holding NaN for the missing accuracy (Python's json writes and reads it) shows the same dash.
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "best_val_acc": float("nan")}))
    code, again, _ = run_cli(capsys, "compare", str(run), "--out", str(tmp_path / "cmp.png"))
    assert code == 0 and not re.search(r"\bnan\b", again, re.I) and again.splitlines()[2].split()[-3] == "-", again


def test_the_compare_figure_labels_each_runs_selected_epoch_with_its_tables_accuracies(tiny_mnist, tmp_path):
    from cnnlab.analysis.compare import COMPARE_HEADERS, compare_rows, plot_compare
    from cnnlab.runs.rundir import load_run

    cfg = make_config("basic_cnn", epochs=2, batch_size=100, val_size=100, device="cpu")
    with_val = fit(cfg, tiny_mnist, out_root=tmp_path / "runs", progress=False).run_dir
    runs = [load_run(with_val), load_run(_without_validation(tiny_mnist, tmp_path / "runs"))]
    rows = [dict(zip(COMPARE_HEADERS, row)) for row in compare_rows(runs)]
    assert rows[0]["best val"] != "-" and rows[1]["best val"] == "-"
    expected = [f"val {rows[0]['best val']}, test {rows[0]['test acc']}", f"test {rows[1]['test acc']}"]
    fig = plot_compare(runs, None)
    labels = {t.get_text(): t for t in fig.axes[1].texts}  # the held-out error panel
    assert sorted(labels) == sorted(expected)
    # Each label points at its run's selected epoch on the curve it labels: validation error, or test error without one.
    for run, key, text in zip(runs, ("val_acc", "test_acc"), expected):
        best = run.summary["best_epoch"]
        (at,) = [m for m in run.metrics if m["epoch"] == best]
        assert labels[text].xy == pytest.approx((best, 100 * (1 - at[key])))
