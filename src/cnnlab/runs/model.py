"""A trained model: loaded from a checkpoint or a run directory, then logits, mirror averaging and evaluation.

Everything that uses a model after training (evaluate, predict, serve, export, the analyses, and the training loop's
own validation) goes through here, so a model is loaded, standardised and evaluated one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data import ImageSet, load_data, lookup
from cnnlab.data.tensors.batching import normalize
from cnnlab.device import autocast, autocast_dtype, resolve_device
from cnnlab.models import create_model
from cnnlab.data.errors import DataError
from cnnlab.runs.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, load_weights, weights_problem

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image


def model_input(
    images: torch.Tensor, cfg: TrainConfig, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """uint8 images -> the float batch the model takes: scaled, augmented if asked (on [0, 1] pixels),
    standardised with the run's statistics, in the run's memory layout."""
    x = normalize(images, cfg.norm_mean, cfg.norm_std, augment=augment)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def tta_forward(model: nn.Module, x: torch.Tensor, hflip: bool) -> torch.Tensor:
    """The model's logits for a normalised batch; with hflip, the mean of the logits for the images and
    for their mirror images (test-time augmentation for models trained with mirroring)."""
    logits = model(x)
    if hflip:
        logits = (logits + model(x.flip(-1))) / 2
    return logits


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Float32 logits for uint8 images, in batches of cfg.eval_batch_size, without gradients
    (averaged with the mirror images' when cfg.tta_hflip)."""
    model.eval()
    amp_dtype = autocast_dtype(images.device, cfg.amp)
    out = []
    for i in range(0, len(images), cfg.eval_batch_size):
        with autocast(images.device, amp_dtype):
            x = model_input(images[i : i + cfg.eval_batch_size], cfg)
            out.append(tta_forward(model, x, cfg.tta_hflip).float())
    return torch.cat(out) if out else torch.empty(0, model.num_classes)


@torch.no_grad()
def evaluation_sums(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """float64 [summed cross-entropy, correct, count] over a split: sums, so that the parts a data-parallel
    run evaluates in each process add up to the whole."""
    logits = predict_logits(model, images, cfg)
    return torch.stack([
        F.cross_entropy(logits, labels, reduction="sum").double(),
        (logits.argmax(1) == labels).sum().double(),
        torch.tensor(float(len(logits)), dtype=torch.float64, device=logits.device),
    ])


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) on a split; NaNs for an empty split."""
    if len(images) == 0:
        return float("nan"), float("nan")
    loss_sum, correct, n = evaluation_sums(model, images, labels, cfg).tolist()
    return loss_sum / n, correct / n


class Guess(tuple):
    """One of a prediction's most probable classes: its `name`, `probability` and `index` (its label). It unpacks as
    (index, probability), the pair top() gave before it carried names, so code written for that keeps working."""

    name: str

    def __new__(cls, index: int, probability: float, name: str) -> "Guess":
        guess = super().__new__(cls, (index, probability))
        guess.name = name
        return guess

    def __getnewargs__(self) -> tuple[int, float, str]:  # pickle and copy call __new__ with these
        return self.index, self.probability, self.name

    @property
    def index(self) -> int:
        return self[0]

    @property
    def probability(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"{self.name!r} {100 * self.probability:.1f}%"


@dataclass(repr=False)  # the default repr would print the image's pixels
class Prediction:
    image: np.ndarray  # the uint8 image the model saw: (H, W) grey or (3, H, W) RGB
    probabilities: list[float]  # one per class, summing to 1
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))  # class names, by label

    def top(self, k: int = 3) -> list[Guess]:
        """The k most probable classes, most probable first."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [Guess(int(c), float(self.probabilities[c]), self.classes[c]) for c in order]

    @property
    def label(self) -> int:
        """The most probable class's label (its index in `classes`)."""
        return self.top(1)[0].index

    @property
    def name(self) -> str:
        """The most probable class's name."""
        return self.classes[self.label]

    def __repr__(self) -> str:
        first, *rest = self.top(3)
        then = f"; then {', '.join(map(repr, rest))}" if rest else ""
        return f"Prediction({first.name!r}, {100 * first.probability:.1f}%{then})"

    def save_image(self, directory: Path, stem: str) -> Path:
        """Write the image the model saw as `directory`/`stem`-WxH.png (replacing one of that name whole)."""
        from PIL import Image

        from cnnlab.atomic import atomic_writer

        pixels = self.image if self.image.ndim == 2 else self.image.transpose(1, 2, 0)
        path = directory / f"{stem}-{pixels.shape[1]}x{pixels.shape[0]}.png"
        with atomic_writer(path) as f:
            Image.fromarray(pixels).save(f, format="PNG")
        return path

    def as_dict(self, k: int = 3) -> dict:
        return {
            "top": [{"class": g.index, "name": g.name, "probability": g.probability} for g in self.top(k)],
            "probabilities": self.probabilities,
        }


# What predict reads: an image file's path, its bytes, a Pillow image, an array of grey levels.
Picture = Union[str, Path, bytes, "Image.Image", np.ndarray]


@dataclass(repr=False)
class TrainedModel:
    """A checkpoint's network in eval mode on a device, with the config it was trained under and its record:
    what `cnnlab.load` returns. `predict` reads pictures, `evaluate` scores it on its data's test split,
    `curves` draws its training curves."""

    network: nn.Module
    config: TrainConfig
    state: dict[str, Any] = field(repr=False)
    source: Path  # the run directory or checkpoint file it was loaded from

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.state, self.config)

    @property
    def model_kwargs(self) -> dict[str, int]:
        """in_channels, num_classes, image_size (MNIST's for checkpoints from before they were recorded)."""
        return {**_MNIST_KWARGS, **self.state.get("model_kwargs", {})}

    @property
    def test_acc(self) -> float | None:
        """The test accuracy recorded with the checkpoint's epoch (None in a checkpoint without metrics)."""
        return self.state.get("metrics", {}).get("test_acc")

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def __repr__(self) -> str:
        acc = "" if self.test_acc is None else f", test acc {100 * self.test_acc:.2f}%"
        return (f"TrainedModel({self.config.model}, {self.dataset.title}, {len(self.classes)} classes"
                f"{acc}, {self.source})")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images shaped like the training data, mirror-averaged as the model was trained."""
        return predict_logits(self.network, images.to(self.device), self.config)

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

    @torch.inference_mode()
    def predict_prepared(self, image: np.ndarray) -> Prediction:
        """Predict a uint8 image already in the training data's format ((H, W) grey or (C, H, W))."""
        x = model_input(torch.from_numpy(image).to(self.device).unsqueeze(0), self.config)  # as evaluation standardises
        probs = torch.softmax(tta_forward(self.network, x, self.config.tta_hflip).float(), dim=1)[0]
        return Prediction(image=image, probabilities=probs.tolist(), classes=self.classes)

    def evaluate(self, data: ImageSet | None = None, data_dir: str | None = None) -> float:
        """Accuracy on the test split of `data`, by default the data set it was trained on (`data_dir`: where its
        files are, or an image folder's new place), which must still have the classes the model was trained on."""
        data = data if data is not None else training_data(self.config, data_dir, classes=self.state.get("classes"))
        labels = data.test_labels.to(self.device)
        return evaluate(self.network, data.test_images.to(self.device), labels, self.config)[1]

    def curves(self, path: str | Path | None = None) -> "Figure":
        """The training curves (loss and error per epoch) as a matplotlib Figure, also written to `path` if given.
        Read from the run directory's metrics.csv, or the checkpoint's own history when it stands alone."""
        from cnnlab.runs.rundir import plot_curves, read_metrics

        metrics = checkpoint_dir(self.source) / "metrics.csv"
        rows = read_metrics(metrics) if metrics.exists() else self.state.get("history", [])
        return plot_curves(rows, path, f"{self.config.model} ({self.config.recipe} recipe)")


def training_data(cfg: TrainConfig, data_dir: str | None = None, progress: bool = False, recorded: bool = True,
                  classes: Sequence[str] | None = None) -> ImageSet:
    """The data set a run trains or was trained on, as its config records it (an image folder at its recorded size
    and split). `data_dir`: where the files are, or an image folder's new place; `recorded`: the config comes from a
    trained run, so a folder that is gone gets told how to name its new place (a new run passes False).

    `classes`: the class names a trained model has, by label. A folder whose classes changed since (one added,
    removed, renamed, or the order changed) would be scored under the wrong labels: refused with a DataError that
    names the difference."""
    data = load_data(cfg.dataset, data_dir, image_size=cfg.image_size, split_seed=cfg.split_seed, progress=progress,
                     recorded=recorded)
    if classes and tuple(classes) != tuple(data.classes):
        raise DataError(f"{data.title} no longer has the classes the model was trained on: "
                        f"{class_difference(tuple(classes), tuple(data.classes))}")
    return data


def class_difference(trained: tuple[str, ...], found: tuple[str, ...]) -> str:
    """How the classes `found` in a data set differ from those a model was `trained` on, in words."""
    def names(xs) -> str:
        shown = ", ".join(repr(x) for x in xs[:5])
        return shown + (f" and {len(xs) - 5} more" if len(xs) > 5 else "")

    added = [c for c in found if c not in trained]
    removed = [c for c in trained if c not in found]
    parts = ([f"added {names(added)}"] if added else []) + ([f"gone {names(removed)}"] if removed else [])
    if not parts:  # the same names, in another order: every label would mean another class
        parts = [f"the same {len(found)} classes in another order ({names(found)} against {names(trained)})"]
    return "; ".join(parts) + f" (trained on {len(trained)} classes, found {len(found)})"


def load(checkpoint: str | Path, device: str = "auto") -> TrainedModel:
    """The trained model in a checkpoint file or a run directory (its best.pt), on `device` (see cnnlab.device)."""
    network, cfg, state = load_model(checkpoint, device)
    return TrainedModel(network, cfg, state, Path(checkpoint))


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """The model of a checkpoint, its config, and the checkpoint itself; on the chosen device, in eval mode
    (`load` wraps the three in a TrainedModel)."""
    dev = resolve_device(device)
    # Checked as a whole: sizes against the model it names (which this cnnlab must have), digest, record, config,
    # finite tensors.
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    cfg.device = str(dev)
    kwargs = state.get("model_kwargs", {})
    problem = _data_problem(cfg, kwargs)
    if problem:
        raise CheckpointError(f"{checkpoint} is not a valid cnnlab checkpoint: {problem}")
    try:  # first on the meta device: the shapes alone, so that weights that do not fit cost no memory
        with torch.device("meta"):
            problem = weights_problem(create_model(cfg.model, **kwargs), state["model_state"])
    except ValueError as e:  # model_kwargs the network cannot take
        raise CheckpointError(f"{checkpoint}: model {cfg.model!r} cannot be built as recorded ({e})") from None
    if problem:
        raise CheckpointError(f"{checkpoint}: the weights do not fit model {cfg.model!r} ({problem})")
    model = create_model(cfg.model, **kwargs)
    load_weights(model, state["model_state"], checkpoint, cfg.model)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), cfg, state


# What a model takes when its checkpoint does not say: MNIST's, as every run did before model_kwargs were recorded.
_MNIST_KWARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28}


def _data_problem(cfg: TrainConfig, model_kwargs: dict[str, int]) -> str | None:
    """Why a model of `model_kwargs` cannot have been trained on the data set `cfg` names (so predict and evaluate
    would feed it pictures of another shape), or None."""
    try:
        dataset = lookup(cfg.dataset)
    except ValueError:
        return f"it was trained on data set {cfg.dataset!r}, which this cnnlab does not have"
    kw = {**_MNIST_KWARGS, **model_kwargs}
    channels, side, n = kw["in_channels"], kw["image_size"], kw["num_classes"]
    if dataset.entry.shape is not None and (channels, side) != dataset.entry.shape:
        c, s = dataset.entry.shape
        return (f"its model takes {channels}x{side}x{side} images, but it is recorded as trained on {dataset.title}, "
                f"whose images are {c}x{s}x{s}")
    if dataset.entry.classes and n != len(dataset.entry.classes):
        return f"its model has {n} classes, but {dataset.title} has {len(dataset.entry.classes)}"
    if dataset.entry.takes_path and cfg.image_size not in (0, side):
        return f"its config resizes the folder's images to {cfg.image_size} pixels, but its model takes {side}"
    return None


def class_names(state: dict, cfg: TrainConfig) -> tuple[str, ...]:
    """The class names of a checkpoint's model, by label: as recorded in training, else its data set's
    (checkpoints from before they were recorded), else the labels' numbers."""
    n = int(state.get("model_kwargs", {}).get("num_classes", 10))
    if len(state.get("classes") or ()) == n:
        return tuple(str(c) for c in state["classes"])
    try:
        known = lookup(cfg.dataset).entry.classes
    except ValueError:  # a data set this cnnlab no longer has
        known = ()
    return tuple(known) if len(known) == n else tuple(str(i) for i in range(n))
