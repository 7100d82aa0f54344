"""The run directory: config.json, metrics.csv, summary.json, checkpoints and curves.png. Written by the
training process that holds its lock (rank 0 alone under torchrun); read by everything else through `load_run`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.atomic import UnsafeDirectory, atomic_writer, make_directory, open_directory
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.locks import FileLock
from cnnlab.readfile import FileRefused, NotAFile, read_bounded

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_FIELDS = [
    "epoch",
    "steps",  # optimiser steps so far
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "lr",
    "seconds",  # this epoch, training and evaluation
    "elapsed",  # since training began
    "time",  # wall clock at the row's end, Unix seconds (to line runs up with other processes)
]


class RunDirBusy(CnnlabError):
    """Another process is training in this run directory."""


class RunDirLock:
    """Held by the process training in a run directory (its .lock file), so that `--resume` cannot start
    while the run it would continue is still going. A killed run's lock goes with its process.

    The directory is checked first (`open_run_dir`: never a link, its user's own) and held open while the lock
    is, and the lock is taken in that very directory."""

    def __init__(self, run_dir: Path, advice: str = "choose another run directory") -> None:
        self._dir: int | None = open_run_dir(run_dir, advice)
        try:
            self._lock = FileLock(Path(run_dir) / ".lock", dir_fd=self._dir)
            if not self._lock.acquire(blocking=False):
                raise RunDirBusy(f"{run_dir} is in use: {self._lock.holder()} is training in it")
        except BaseException:
            os.close(self._dir)
            raise

    def release(self) -> None:
        self._lock.release()
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None


RUN_NAME_ADVICE = "choose another --run-name"
TENSORBOARD_DIR = "tensorboard"  # the directory a run makes inside its own: --tensorboard's (train/tensorboard.py)


def open_run_dir(path: str | Path, advice: str = "choose another run directory") -> int:
    """A descriptor of the run directory `path` (atomic.open_directory), once it is checked to be a place a run
    may be written: a directory itself, not a symbolic link to someone's directory; its user's own, since the
    owner of a directory can swap it for a link at any time, even in a shared folder with the sticky bit (as
    /tmp has), where nobody else can; and with no link where the run makes a directory inside it. The caller
    closes it. A run's files are then written by their paths (torch, matplotlib and TensorBoard write by path),
    and in a runs folder that others may write to without the sticky bit, one of them could still swap the
    directory between two writes: the runs folder is the user's choice, as its own permissions are.

    Raises:
        UnsafeDirectory: one line: the path, what it is, and `advice` (what to do instead).
        FileNotFoundError: nothing is at `path`.
    """
    path = Path(path)
    fd = open_directory(path, f"remove it or {advice}")
    try:
        owner = os.fstat(fd).st_uid
        if hasattr(os, "geteuid") and owner != os.geteuid():
            raise UnsafeDirectory(path, f"{path} belongs to another user (uid {owner}), who could swap it for a "
                                  f"link while a run writes in it: {advice}")
        try:
            inside = os.stat(TENSORBOARD_DIR, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            inside = 0
        if stat.S_ISLNK(inside):
            raise UnsafeDirectory(path / TENSORBOARD_DIR, f"{path / TENSORBOARD_DIR} is a symbolic link; cnnlab "
                                  f"never writes through one: remove it or {advice}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_run_dir(path: str | Path, advice: str = RUN_NAME_ADVICE) -> None:
    """Refuse (UnsafeDirectory, one line) a run directory `open_run_dir` refuses; nothing at `path` is fine."""
    if os.path.lexists(path):
        os.close(open_run_dir(path, advice))


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def check_run_name(name: str) -> str:
    """`name` if it can name a run directory under the runs folder: one path component of letters, digits, '.',
    '_' and '-', so that it never reaches outside the folder or needs quoting in the resume command.

    Raises:
        ValueError: the name and what is wrong with it.
    """
    if not name or name in (".", "..") or len(name) > 200 or not set(name) <= _NAME_CHARS:
        raise ValueError(f"a run name is one folder name of letters, digits, '.', '_' and '-' (at most 200), got {name!r}")
    return name


def name_from(text: str) -> str:
    """A run name made from any text (a rendezvous id): each character a run name cannot hold becomes '-'."""
    return "".join(c if c in _NAME_CHARS else "-" for c in text)[:200].strip(".") or "run"


def run_state(path: str | Path) -> str:
    """What a named run directory holds: "new" (nothing, or a run stopped before its first checkpoint), "stopped"
    (a checkpoint and no summary.json: continue it) or "finished" (summary.json, the finished marker)."""
    path = Path(path)
    if (path / "summary.json").exists():
        return "finished"
    if (path / "last.pt").exists() or (path / "last.prev.pt").exists():
        return "stopped"
    return "new"


# What a run writes before its first checkpoint; a run that starts again in its named directory removes them.
_STARTED_FILES = ("metrics.csv", "best.pt", "branch_grads.json", "config.json")


def make_run_dir(root: str | Path, model: str, name: str | None = None) -> Path:
    """A new, empty runs/<time>-<model>/ directory (a numeric suffix avoids clashes), or runs/<name>/ (made if
    missing; the caller checks with run_state that no checkpoint is in it and calls clear_unstarted once it
    holds the lock). Never a symbolic link: one at <name> is refused (UnsafeDirectory), and one at <time>-<model>
    is passed by. The runs folder `root` is the user's choice and may itself be a link."""
    root = Path(root)
    if name is not None:  # an existing directory of that name is used, if it is not a link
        return make_directory(root / check_run_name(name), f"remove it or {RUN_NAME_ADVICE}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{stamp}-{model}" + (f"-{i}" if i else ""))
        try:  # made anew: a link, or anything, already at the name is "exists", and the next name is tried
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {root}")


def keep_previous(path: Path, previous: Path) -> None:
    """Make `previous` what `path` holds now (nothing if it is missing), before `path` is replaced: through a hard
    link renamed into place, so that `path` is never absent and `previous` never half-written."""
    if not path.exists():
        return
    tmp = previous.with_name(f".{previous.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links: a copy, then the same rename
        shutil.copyfile(path, tmp)
    os.replace(tmp, previous)


# The files a training run writes into its directory (the lock's, and atomic_writer's temporaries, besides).
RUN_FILES = ("config.json", "metrics.csv", "branch_grads.json", "best.pt", "last.pt", "last.prev.pt", "summary.json", "curves.png")


def remove_unstarted(run_dir: str | Path) -> bool:
    """Remove the directory of a new run that stopped before its first epoch ended (no last.pt), so that a failed
    start leaves nothing behind: there is nothing in it to resume or read. Only the files a run writes are removed,
    and the directory only when that empties it (a file someone else put there keeps it). True when it is gone.

    Removed through the directory's descriptor, never through a link: a run directory or tensorboard/ that is a
    link now (swapped in since the run began) is left as it is, and so is what it points to."""
    run_dir = Path(run_dir)
    try:
        fd = open_directory(run_dir)
    except OSError:  # gone, or a link: nothing of this run's to remove there
        return False
    try:
        if _present("last.pt", fd):
            return False
        for name in (*RUN_FILES, ".lock"):
            _unlink(name, fd)
        _remove_partial_writes(fd)
        with contextlib.suppress(OSError):  # a link, not a directory, or something else in it: left as it is
            events = open_directory(TENSORBOARD_DIR, dir_fd=fd)
            try:
                with os.scandir(events) as entries:
                    for entry in entries:
                        if entry.name.startswith("events.out.tfevents.") and not entry.is_dir(follow_symlinks=False):
                            _unlink(entry.name, events)
            finally:
                os.close(events)
            os.rmdir(TENSORBOARD_DIR, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        run_dir.rmdir()  # never through a link: rmdir refuses one
    except OSError:
        return False
    return True


def _present(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink(name: str, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_writer(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def append_metrics(path: str | Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to metrics.csv, writing the header first if the file is new."""
    path = Path(path)
    new = not path.exists()
    # Not through a symbolic link: a metrics.csv made a link to another file would have rows appended to it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with open(fd, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})


def write_metrics(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write metrics.csv anew, atomically (a resumed run drops rows written after its last checkpoint)."""
    with atomic_writer(path, "w") as f:  # the mode the umask gives, as append_metrics's open() does
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, lineterminator="\r\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv as a list of rows of floats (empty cells become NaN)."""
    rows = csv.DictReader(io.StringIO(read_run_file(path), newline=""))
    return [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()} for r in rows]


RUN_FILE_LIMIT = 64 * 2**20  # config.json, summary.json, metrics.csv and branch_grads.json are kilobytes


def read_run_file(path: str | Path) -> str:
    """The text of a run's record file, read as a regular file of bounded size: a run directory may come from
    someone else, and a config.json linked to /dev/zero or made a named pipe must not hang a command or fill
    its memory.

    Raises:
        RunDirError: not a regular file, unreadable, or over RUN_FILE_LIMIT.
        ValueError: not UTF-8.
    """
    try:
        return read_bounded(path, RUN_FILE_LIMIT).decode("utf-8")
    except FileRefused as e:
        raise RunDirError(f"{path} {e}, not a run file" if isinstance(e, NotAFile) else f"{path}: {e}") from None


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) >= 1e5 else f"{v:.6g}"  # wall-clock times keep their milliseconds
    return v


def plot_curves(rows: list[dict[str, float | None]], path: str | Path | None, title: str = "",
                train_note: str = "") -> Figure:
    """Loss (left) and error rate on a log scale (right) per epoch, for train, validation and test: the Figure,
    also written to `path` (curves.png) unless it is None. A missing value (None or NaN) is left out.

    train_note says how the training figures differ from the held-out ones (augmented batches,
    label-smoothed loss), so the gap between the curves is not misread.
    """
    # A Figure of its own rather than pyplot's: no global figure to close or leak when many runs are plotted,
    # no backend switched under a notebook, and the caller can still show it (Jupyter renders a returned Figure).
    from matplotlib.figure import Figure

    def value(row: dict[str, float | None], key: str) -> float:
        v = row.get(key)
        return float("nan") if v is None else float(v)

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4))
    ax_l, ax_e = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        label = f"{split} ({train_note})" if split == "train" and train_note else split
        loss = [value(r, f"{split}_loss") for r in rows]
        err = [100 * (1 - value(r, f"{split}_acc")) for r in rows]
        if any(v == v for v in loss):
            ax_l.plot(epochs, loss, style, marker="o", ms=3, label=label)
        if any(v == v for v in err):
            ax_e.plot(epochs, err, style, marker="o", ms=3, label=label)
    ax_l.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_e.set(xlabel="epoch", ylabel="error (%), log scale", title="error rate (100 - accuracy)", yscale="log")
    from matplotlib.ticker import MaxNLocator

    from cnnlab.plotting import font_family, plain_log_ticks, save_figure  # matplotlib: only where a figure is made

    plain_log_ticks(ax_e.yaxis)
    for ax in (ax_l, ax_e):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1 2 3, never 0.98 1.00 1.02
        if len(set(epochs)) == 1:  # one epoch (a short budget): room for integers around it
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    if title:
        fig.suptitle(title, fontfamily=font_family(title))
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


class RunDirError(CnnlabError):
    """A directory that is not a finished cnnlab run; the message says what is missing."""


class RunFinished(RunDirError):
    """A new run was given the name of a finished one (which is never trained again by accident)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is finished; evaluate it, or choose another name (--run-name)")


def clear_unstarted(path: Path) -> None:
    """Remove what a run that stopped before its first checkpoint left in its named directory, so that the run
    starting there anew writes each epoch once (a metrics row or best.pt may precede the first last.pt).
    Through the directory's descriptor: a link is refused (UnsafeDirectory), what it points to untouched."""
    fd = open_directory(path, f"remove it or {RUN_NAME_ADVICE}")
    try:
        for name in _STARTED_FILES:
            _unlink(name, fd)
        _remove_partial_writes(fd)
    finally:
        os.close(fd)


def remove_partial_writes(run_dir: Path) -> None:
    """Remove what a killed run was writing when it stopped (the atomic writer's temporary files), through the
    directory's descriptor: a link is refused (UnsafeDirectory), what it points to untouched."""
    fd = open_directory(run_dir)
    try:
        _remove_partial_writes(fd)
    finally:
        os.close(fd)


def _remove_partial_writes(dir_fd: int) -> None:
    # Only the temporaries of a run's own files (atomic_writer's ".config.json.k2j4x1.tmp", keep_previous's
    # ".last.prev.pt.link.tmp"): another ".something.tmp" there is someone's, and an export or an evaluation
    # writing beside the run may be writing its own temporary at this moment.
    with os.scandir(dir_fd) as entries:
        partial = [e.name for e in entries if e.name.endswith(".tmp") and not e.is_dir(follow_symlinks=False)
                   and any(e.name.startswith(f".{name}.") for name in RUN_FILES)]
    for name in partial:
        _unlink(name, dir_fd)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, float]]
    # What a run that just finished in this process already knows, so that its table looks nothing up again:
    # its trained network and its data set's title (None: read back from disk, looked up from the config).
    network: Any = None
    data_title: str | None = None

    @property
    def label(self) -> str:
        return f"{self.config['model']} ({self.config.get('recipe', '?')}, seed {self.config.get('seed', '?')})"


def load_run(path: str | Path) -> Run:
    """Read config.json, summary.json and metrics.csv of a finished run directory."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory (expected a run directory such as runs/<time>-<model>)")
    missing = [n for n in ("config.json", "summary.json", "metrics.csv") if not (path / n).exists()]
    if missing == ["summary.json"] and (path / "last.pt").exists():
        raise RunDirError(f"{path} is not a finished cnnlab run (no summary.json: stopped, or still training; "
                          f"cnnlab train --resume {path} continues a stopped one)")
    if missing:
        raise RunDirError(f"{path} is not a finished cnnlab run (missing {', '.join(missing)})")
    try:
        config = json.loads(read_run_file(path / "config.json"))
        summary = json.loads(read_run_file(path / "summary.json"))
        metrics = read_metrics(path / "metrics.csv")
    except (ValueError, KeyError) as e:
        raise RunDirError(f"{path} has an unreadable run file ({e})") from None
    try:  # what cnnlab wrote: a config TrainConfig takes, a summary that is a mapping
        TrainConfig.from_dict(config)
    except ValueError as e:
        raise RunDirError(f"{path / 'config.json'} is not a config cnnlab wrote ({e})") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path / 'summary.json'} is not a summary cnnlab wrote (not a mapping)")
    return Run(path, config, summary, metrics)


def load_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """The finished runs among `paths`, and one line for each directory skipped: its path and why. A shell
    pattern such as runs/*-resnet also matches runs that were stopped or are still training; they have no
    summary yet, and their partial numbers would not compare fairly with finished runs, so they are left out.

    Raises:
        RunDirError: none of `paths` is a finished run (the message lists why, for each).
    """
    runs, skipped = [], []
    for p in paths:
        try:
            runs.append(load_run(p))
        except RunDirError as e:
            skipped.append(str(e))
    if not runs:
        raise RunDirError(skipped[0] if len(skipped) == 1 else f"none of the {len(skipped)} directories is a finished cnnlab run: {'; '.join(skipped)}")
    return runs, skipped


@dataclass(frozen=True)
class FoundRun:
    """A finished run met by a search of a runs folder (`finished_runs`), as read from its config.json and
    summary.json."""

    path: Path
    model: str
    dataset: str  # as config.json names it: "mnist", "imagefolder:<folder>"
    finished: float  # when summary.json was written (Unix seconds): a resumed run counts from its finish
    val_acc: float | None  # summary.json's best_val_acc, what the run chose its best epoch by; None: no hold-out
    test_acc: float | None  # shown beside it; never what a run is chosen by (the test set judges, it does not choose)
    block: str = ""  # config.json's design of the block, for a model that takes one ("" for the others)

    @property
    def network(self) -> str:
        """The network it trained, in words: the model's name, with its design when it has one."""
        return f"{self.model} {self.block}" if self.block else self.model


def finished_runs(root: str | Path, skipped: list[str] | None = None) -> list[FoundRun]:
    """The finished runs under `root`, by directory name. Finished means summary.json and best.pt are there.
    Unreadable directories are passed by: this is a search, not a command about one run. An absent `root` holds none.

    Each config.json and summary.json is read as any run file is (`read_run_file`): a folder of runs may come from
    someone else, and one made a named pipe or a link to /dev/zero must not hang or fill the search. Given a list
    `skipped`, one line is added to it for each finished run passed by: its directory's name and why."""
    root = Path(root)
    try:
        candidates = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    found = []
    for path in candidates:
        try:
            if not (path / "best.pt").is_file():
                continue
            finished = (path / "summary.json").stat().st_mtime
        except OSError:
            continue  # not finished: stopped, still training, or not a run
        try:
            found.append(_found_run(path, finished))
        except RunDirError as e:
            if skipped is not None:
                skipped.append(f"{path.name}: {str(e).removeprefix(f'{path}{os.sep}')}")
    return found


def _found_run(path: Path, finished: float) -> FoundRun:
    documents = []
    for name in ("config.json", "summary.json"):
        try:
            documents.append(json.loads(read_run_file(path / name)))
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested beyond the parser
            raise RunDirError(f"{name} is not JSON") from None
    config, summary = documents
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, str):
        raise RunDirError("config.json names no model")
    if not isinstance(summary, dict):
        raise RunDirError("summary.json is not a summary cnnlab wrote (not a mapping)")
    dataset = config.get("dataset", TrainConfig.dataset)
    block = config.get("block") or ""
    return FoundRun(path, model, dataset if isinstance(dataset, str) else repr(dataset), finished,
                    _accuracy(summary.get("best_val_acc")), _accuracy(summary.get("test_acc")),
                    block if isinstance(block, str) else repr(block))


def _accuracy(value: Any) -> float | None:
    """An accuracy as summary.json holds it (a fraction), or None: null, absent, or not a fraction at all."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return None  # NaN fails the comparison too
    return float(value)


def newest_finished(root: str | Path, skipped: list[str] | None = None) -> list[Path]:
    """The newest finished run of each model under `root`, by model name (`finished_runs`; newest by the time
    summary.json was written)."""
    newest: dict[str, FoundRun] = {}
    for run in finished_runs(root, skipped):
        if run.model not in newest or run.finished >= newest[run.model].finished:
            newest[run.model] = run
    return [newest[m].path for m in sorted(newest)]


@dataclass(frozen=True)
class BestRun:
    """The finished run chosen for one model on one data set (`best_finished`), and what it was chosen among."""

    run: FoundRun
    runs: int  # finished runs of that model on that data set
    tied: int  # other runs among them with the same validation accuracy (the newest of the tied is chosen)
    unranked: int  # runs among them without a validation accuracy (trained with no hold-out): ranked last
    newer: FoundRun | None  # the newest of them, when it is not the one chosen

    @property
    def why(self) -> str:
        """Why it was chosen, in words: "best validation accuracy 99.57% of 3 finished runs"."""
        if self.runs == 1:
            return "the only finished run"
        if self.run.val_acc is None:
            return (f"the newest of {self.runs} finished runs: none has a validation accuracy "
                    "(trained without a hold-out)")
        notes = ([f"tied with {self.tied} other{'s' if self.tied > 1 else ''}: the newest of them"] if self.tied else [])
        notes += [f"{self.unranked} without a validation accuracy ranked last"] if self.unranked else []
        return (f"best validation accuracy {100 * self.run.val_acc:.2f}% of {self.runs} finished runs"
                + (f" ({'; '.join(notes)})" if notes else ""))


def best_finished(root: str | Path, skipped: list[str] | None = None) -> list[BestRun]:
    """The finished run to serve of each network on each data set under `root` (what `cnnlab serve` serves when
    given no run), by model (and design, for a designed block) and data set name: the one with the best validation accuracy, which is what each run chose
    its own best epoch by, never the test accuracy; of runs with the same, the newest. A run trained without a
    hold-out has no validation accuracy and ranks below every run that has one; among such runs, the newest wins.
    Runs on different data sets, and designs of different blocks, are never compared. `skipped` as in
    `finished_runs`."""
    groups: dict[tuple[str, str, str], list[FoundRun]] = {}
    for run in finished_runs(root, skipped):
        groups.setdefault((run.model, run.block, run.dataset), []).append(run)
    chosen = []
    for key in sorted(groups):
        runs = groups[key]
        best = max(runs, key=lambda r: (r.val_acc is not None, r.val_acc or 0.0, r.finished, r.path.name))
        newest = max(runs, key=lambda r: (r.finished, r.path.name))
        tied = sum(1 for r in runs if r is not best and r.val_acc is not None and r.val_acc == best.val_acc)
        chosen.append(BestRun(best, len(runs), tied, sum(1 for r in runs if r.val_acc is None),
                              None if newest is best else newest))
    return chosen
