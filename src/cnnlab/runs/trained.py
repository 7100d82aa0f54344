"""A trained model: a checkpoint's network on a device with its config and its typed record, loaded one way (`load`),
then predict, evaluate and draw its curves.

Everything that uses a model after training (evaluate, predict, serve, export, explain, the analyses) loads it here,
so a model is checked, built, standardised and evaluated one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet, lookup
from cnnlab.device import resolve_device, tune_cpu_allocator
from cnnlab.models import count_parameters, create_model
from cnnlab.runs.checkpoint import Checkpoint, CheckpointError, checkpoint_dir, load_weights, weights_problem
from cnnlab.runs.forward import evaluate, model_input, predict_logits, tta_forward
from cnnlab.runs.prediction import Picture, Prediction

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(repr=False)
class TrainedModel:
    """A checkpoint's network in eval mode on a device, with the config it was trained under and its record:
    what `cnnlab.load` returns. `predict` reads pictures, `evaluate` scores it on its data's test split,
    `curves` draws its training curves."""

    network: nn.Module
    config: TrainConfig  # the record's config, with the device it was loaded on
    record: Checkpoint = field(repr=False)  # the checkpoint it was loaded from, typed
    source: Path  # the run directory or checkpoint file it was loaded from

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.record, self.config)

    @property
    def model_kwargs(self) -> dict[str, int]:
        """in_channels, num_classes, image_size (MNIST's for checkpoints from before they were recorded)."""
        return self.record.model_kwargs

    @property
    def test_acc(self) -> float | None:
        """The test accuracy recorded with the checkpoint's epoch (None in a checkpoint without metrics)."""
        return self.record.test_acc

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def __repr__(self) -> str:
        acc = "" if self.test_acc is None else f", test acc {100 * self.test_acc:.2f}%"
        return (f"TrainedModel({self.config.model}, {self.dataset.title}, {len(self.classes)} classes"
                f"{acc}, {self.source})")

    def describe(self) -> dict[str, Any]:
        """What it is, in plain values and without a file-system path (a server passes this on to its clients)."""
        return {
            "model": self.config.model,
            "block": self.config.block,  # its block design's spec ("" for a model that takes none)
            "dataset": self.dataset.shown,
            "data_title": self.dataset.shown if self.dataset.entry.takes_path else self.dataset.title,
            "classes": list(self.classes),
            "parameters": count_parameters(self.network),
            "epoch": self.record.epoch,
            "test_accuracy": self.test_acc,
        }

    def logits(self, images: torch.Tensor, step: Callable[[int], object] = lambda n: None) -> torch.Tensor:
        """Logits for uint8 images shaped like the training data, mirror-averaged as the model was trained;
        `step(n)` is told each batch of n images done."""
        return predict_logits(self.network, images.to(self.device), self.config, step)

    @cached_property
    def dataset(self):
        """The data set it was trained on, as the registry knows it (its title, picture preparation)."""
        return lookup(self.config.dataset)

    @cached_property
    def prepare(self) -> Callable[..., np.ndarray]:
        """The function that makes a user's picture into what this model reads: its data set's own preparation
        (a digit centred as MNIST's are, a garment as Fashion-MNIST's, a square for an image-folder model)."""
        kw = self.model_kwargs
        return lambda picture: self.dataset.prepare(picture, kw["in_channels"], kw["image_size"])

    def predict(self, images: Picture | Sequence[Picture]) -> Prediction | list[Prediction]:
        """What the model sees in a picture: an image file's path, its bytes, a Pillow image or a grey array (any
        size: each is prepared as the training images were). A list of them, or a 3-D array of grey images,
        gives a list of predictions.

        Raises cnnlab.data.tensors.pictures.ImageError for a picture that cannot be read or holds nothing.
        """
        if isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 3
                                                 and self.model_kwargs["in_channels"] == 1):
            return [self.predict_prepared(self.prepare(one)) for one in images]
        return self.predict_prepared(self.prepare(images))

    def predict_prepared(self, image: np.ndarray) -> Prediction:
        """Predict a uint8 image already in the training data's format ((H, W) grey or (C, H, W))."""
        return Prediction(image=image, probabilities=self.forward_prepared(image).tolist(), classes=self.classes)

    @torch.inference_mode()
    def forward_prepared(self, image: np.ndarray) -> torch.Tensor:
        """The class probabilities (float32, one per class) for a uint8 image already in the training data's format,
        standardised as evaluation does and mirror-averaged as the model was trained: the one forward of a picture,
        which predict and the inside view (cnnlab.inference.explain, its hooks on the network) both run."""
        x = model_input(torch.from_numpy(image).to(self.device).unsqueeze(0), self.config)
        return torch.softmax(tta_forward(self.network, x, self.config.tta_hflip).float(), dim=1)[0]

    def load_data(self, data_dir: str | None = None, *, progress: bool = False) -> ImageSet:
        """The data set it was trained on, as its config records it (an image folder at its recorded size and split;
        `data_dir`: where its files are, or an image folder's new place), refused with a DataError naming the
        difference when its classes are no longer those the model was trained on."""
        return self.dataset.load(data_dir, image_size=self.config.image_size, split_seed=self.config.split_seed,
                                 progress=progress, recorded=True, classes=self.record.classes)

    def evaluate(self, data: ImageSet | None = None, data_dir: str | None = None) -> float:
        """Accuracy on the test split of `data`, by default the data set it was trained on (`data_dir`: where its
        files are, or an image folder's new place), which must still have the classes the model was trained on."""
        data = data if data is not None else self.load_data(data_dir)
        labels = data.test_labels.to(self.device)
        return evaluate(self.network, data.test_images.to(self.device), labels, self.config)[1]

    def curves(self, path: str | Path | None = None) -> "Figure":
        """The training curves (loss and error per epoch) as a matplotlib Figure, also written to `path` if given.
        Read from the run directory's metrics.csv, or the checkpoint's own history when it stands alone."""
        from cnnlab.runs.rundir import plot_curves, read_metrics

        metrics = checkpoint_dir(self.source) / "metrics.csv"
        rows = read_metrics(metrics) if metrics.exists() else self.record.history
        return plot_curves(rows, path, f"{self.config.model} ({self.config.recipe} recipe)")


def load(checkpoint: str | Path, device: str = "auto") -> TrainedModel:
    """The trained model in a checkpoint file or a run directory (its best.pt), on `device` (see cnnlab.device), in
    eval mode: the one way a trained model is loaded. Checked as a whole first (Checkpoint.read: sizes against the
    model it names, digest, record, config, finite tensors), then against its data set (`_data_problem`), and its
    weights against the network built on the meta device, so that weights that do not fit cost no memory."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()  # a notebook's evaluation reuses its batches' memory, as every command does
    record = Checkpoint.read(checkpoint)
    cfg = record.train_config
    cfg.device = str(dev)
    problem = _data_problem(cfg, record.model_kwargs)
    if problem:
        raise CheckpointError(f"{checkpoint} is not a valid cnnlab checkpoint: {problem}")
    network = _network(checkpoint, cfg, record)
    network = network.to(dev)
    if cfg.channels_last:
        network = network.to(memory_format=torch.channels_last)
    return TrainedModel(network.eval(), cfg, record, Path(checkpoint))


def _network(checkpoint: str | Path, cfg: TrainConfig, record: Checkpoint) -> nn.Module:
    """The network a record names, built as recorded, with its weights (on the CPU)."""
    try:  # first on the meta device: the shapes alone, so that weights that do not fit cost no memory
        with torch.device("meta"):
            problem = weights_problem(create_model(cfg.model, block=cfg.block, **record.model_kwargs), record.model_state)
    except ValueError as e:  # model_kwargs the network cannot take
        raise CheckpointError(f"{checkpoint}: model {cfg.model!r} cannot be built as recorded ({e})") from None
    if problem:
        raise CheckpointError(f"{checkpoint}: the weights do not fit model {cfg.model!r} ({problem})")
    network = create_model(cfg.model, block=cfg.block, **record.model_kwargs)
    load_weights(network, record.model_state, checkpoint, cfg.model)
    return network


def _data_problem(cfg: TrainConfig, model_kwargs: dict[str, int]) -> str | None:
    """Why a model of `model_kwargs` cannot have been trained on the data set `cfg` names (so predict and evaluate
    would feed it pictures of another shape), or None."""
    try:
        dataset = lookup(cfg.dataset)
    except ValueError:
        return f"it was trained on data set {cfg.dataset!r}, which this cnnlab does not have"
    channels, side, n = model_kwargs["in_channels"], model_kwargs["image_size"], model_kwargs["num_classes"]
    if dataset.entry.shape is not None and (channels, side) != dataset.entry.shape:
        c, s = dataset.entry.shape
        return (f"its model takes {channels}x{side}x{side} images, but it is recorded as trained on {dataset.title}, "
                f"whose images are {c}x{s}x{s}")
    if dataset.entry.classes and n != len(dataset.entry.classes):
        return f"its model has {n} classes, but {dataset.title} has {len(dataset.entry.classes)}"
    if dataset.entry.takes_path and cfg.image_size not in (0, side):
        return f"its config resizes the folder's images to {cfg.image_size} pixels, but its model takes {side}"
    return None


def class_names(record: Checkpoint, cfg: TrainConfig) -> tuple[str, ...]:
    """The class names of a checkpoint's model, by label: as recorded in training, else its data set's
    (checkpoints from before they were recorded), else the labels' numbers."""
    n = int(record.model_kwargs["num_classes"])
    if len(record.classes) == n:
        return tuple(str(c) for c in record.classes)
    try:
        known = lookup(cfg.dataset).entry.classes
    except ValueError:  # a data set this cnnlab no longer has
        known = ()
    return tuple(known) if len(known) == n else tuple(str(i) for i in range(n))
