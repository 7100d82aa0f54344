"""Comparing runs when the shell pattern also matches runs that never finished."""

from __future__ import annotations

import shutil

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
