"""A trained model ready to answer: loaded once, then picture in, classes and probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.atomic import atomic_writer
from cnnlab.data.batching import normalize
from cnnlab.data.pictures import ImageError
from cnnlab.data.registry import lookup
from cnnlab.models import count_parameters
from cnnlab.runs import class_names, load_model, tta_forward


@dataclass
class Prediction:
    image: np.ndarray  # the uint8 image the model saw: (H, W) grey or (3, H, W) RGB
    probabilities: list[float]  # one per class, summing to 1
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))  # class names, by label

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The k most probable classes as (class, probability), most probable first."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(c), float(self.probabilities[c])) for c in order]

    def save_image(self, directory: Path, stem: str) -> Path:
        """Write the image the model saw as `directory`/`stem`-WxH.png (replacing one of that name whole)."""
        pixels = self.image if self.image.ndim == 2 else self.image.transpose(1, 2, 0)
        path = directory / f"{stem}-{pixels.shape[1]}x{pixels.shape[0]}.png"
        with atomic_writer(path) as f:
            Image.fromarray(pixels).save(f, format="PNG")
        return path

    def as_dict(self, k: int = 3) -> dict:
        return {
            "top": [{"class": c, "name": self.classes[c], "probability": p} for c, p in self.top(k)],
            "probabilities": self.probabilities,
        }


class Predictor:
    """A checkpoint's model on the CPU, in eval mode, with its metadata and the preprocessing its training
    data calls for (a digit for MNIST, a garment for Fashion-MNIST, a stretched square for an image folder).

    Args:
        checkpoint: a checkpoint file or a run directory (its best.pt).
        device: where to run the model ("cpu" by default: one image is too small for a GPU to pay off).
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        self.model, self.config, state = load_model(checkpoint, device)
        kwargs = state.get("model_kwargs", {})
        self.in_channels, self.image_size = kwargs.get("in_channels", 1), kwargs.get("image_size", 28)
        self.classes = class_names(state, self.config)
        dataset = lookup(self.config.dataset)  # its picture preparation and title
        self.prepare = lambda picture: dataset.prepare(picture, self.in_channels, self.image_size)
        self.device = next(self.model.parameters()).device
        self.info = {
            "model": self.config.model,
            "dataset": self.config.dataset,
            "data_title": dataset.title,
            "classes": list(self.classes),
            "parameters": count_parameters(self.model),
            "epoch": state.get("epoch"),
            "test_accuracy": state.get("metrics", {}).get("test_acc"),
            "checkpoint": str(checkpoint),
        }

    @torch.inference_mode()
    def predict_image(self, image: np.ndarray) -> Prediction:
        """Predict a uint8 image already in the training data's format ((H, W) grey or (C, H, W))."""
        x = normalize(torch.from_numpy(image).to(self.device).unsqueeze(0), self.config.norm_mean, self.config.norm_std)
        probs = torch.softmax(tta_forward(self.model, x, self.config.tta_hflip).float(), dim=1)[0]
        return Prediction(image=image, probabilities=probs.tolist(), classes=self.classes)

    def predict_file(self, path: str | Path, save_to: Path | None = None) -> Prediction:
        """Predict an image file and, given a directory `save_to`, save there the image the model saw.

        Raises ImageError for any problem of this file alone (unreadable, not an image, cannot be saved), so
        that a caller going through many files can report it and go on.
        """
        pred = self.predict(path)
        if save_to is not None:
            try:
                pred.save_image(save_to, Path(path).stem)
            except OSError as e:
                raise ImageError(f"cannot save the image the model saw ({e.strerror or e})") from None
        return pred

    def predict(self, source) -> Prediction:
        """Preprocess any picture (path, bytes, PIL image; a grey array for MNIST and Fashion-MNIST models), then predict it."""
        return self.predict_image(self.prepare(source))
