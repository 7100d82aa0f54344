"""The models a server serves: each loaded once, named by its run directory, and listed for the page.

A shelf starts with the runs it was given (or the best finished run of each model under the runs folder) and
grows when a training from the page finishes. Adding happens in the event loop's thread while requests read it;
a lock keeps the listing and the lookup consistent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cnnlab.models.switches import parts
from cnnlab.runs.checkpoint import checkpoint_dir
from cnnlab.runs.rundir import BestRun, FoundRun
from cnnlab.runs.trained import TrainedModel, load


class NoSuchModel(LookupError):
    """A model id the shelf does not hold (the message names those it holds), or none served at all; `code` and
    `params` as the page is told (serve/inputs.ERROR_CODES)."""

    def __init__(self, message: str, served: bool, code: str, **params: str) -> None:
        super().__init__(message)
        self.served, self.code, self.params = served, code, params


@dataclass
class ServedModel:
    """A trained model as the server serves it: under an id, labelled with when its run finished."""

    id: str  # its run directory's name: what the page and the API call it
    trained: TrainedModel
    finished: float  # when its run finished (Unix seconds), for its label
    chosen: BestRun | None = None  # how it was chosen among the runs folder's runs; None: named, or trained here

    def describe(self) -> dict[str, Any]:
        """What /api/model says of it: no file-system path (the server's layout is nobody's business). `newer_run`:
        a finished run of its model and data set that is newer than this one, chosen as the best (or None)."""
        info = self.trained.describe()
        acc = info["test_accuracy"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.finished))
        name = f"{info['model']} {info['block']}" if info.get("block") else info["model"]  # a design names its block
        label = " · ".join([name] + ([f"{100 * acc:.2f}%"] if acc is not None else []) + [when])
        newer = self.chosen.newer if self.chosen else None
        return {
            "id": self.id, "label": label, **info,
            "parts": [{"name": p.name, "block": p.block, "kind": p.kind} for p in parts(self.trained.network)],
            "val_accuracy": self.chosen.run.val_acc if self.chosen else None,
            "newer_run": _found(newer) if newer else None,
        }


def _found(run: FoundRun) -> dict[str, Any]:
    return {"id": run.path.name, "finished": run.finished, "val_accuracy": run.val_acc, "test_accuracy": run.test_acc}


class Shelf:
    """The served models, in the order they were added. The default is the first with parts to switch off (an
    Inception or residual network: what the inside view is for), else the first."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def load(self, source: str | Path, chosen: BestRun | None = None) -> ServedModel:
        """Load a run directory or checkpoint file and serve it (CheckpointError for a bad one); `chosen`: how it
        was chosen among the runs of a runs folder."""
        source = Path(source)
        trained = load(source, self.device)
        folder = checkpoint_dir(source)
        stamp = folder / "summary.json" if (folder / "summary.json").exists() else (
            source if source.is_file() else folder / "best.pt")
        try:
            finished = stamp.stat().st_mtime
        except OSError:
            finished = time.time()
        with self._lock:
            name = folder.resolve().name or "model"
            served_id, n = name, 1
            while served_id in self._models:  # two checkpoints of one folder, or folders of one name
                n += 1
                served_id = f"{name}-{n}"
            served = self._models[served_id] = ServedModel(served_id, trained, finished, chosen)
        return served

    def load_all(self, sources: Iterable[str | Path]) -> list[ServedModel]:
        return [self.load(s) for s in sources]

    def get(self, model_id: str | None) -> ServedModel:
        """The model of that id; None means the default. NoSuchModel names the valid ids."""
        with self._lock:
            if not self._models:
                raise NoSuchModel("no model is served yet: train one", False, "model.none")
            if model_id is None:
                return self._models[self._default()]
            if model_id not in self._models:
                raise NoSuchModel(f"unknown model {model_id!r}; valid: {', '.join(self._models)}", True,
                                  "model.unknown", model=model_id, valid=", ".join(self._models))
            return self._models[model_id]

    @property
    def default(self) -> str | None:
        with self._lock:
            return self._default() if self._models else None

    def _default(self) -> str:
        with_parts = (i for i, m in self._models.items() if parts(m.trained.network))
        return next(with_parts, next(iter(self._models)))

    def served(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.served()]

    def __len__(self) -> int:
        return len(self._models)
