"""A trained model ready to answer: loaded once, then picture in, classes and probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.batching import normalize
from cnnlab.inference.preprocess import to_mnist
from cnnlab.models import count_parameters
from cnnlab.train import CheckpointError, load_model, tta_forward


@dataclass
class Prediction:
    image: np.ndarray  # the 28x28 uint8 image the model saw
    probabilities: list[float]  # one per class, summing to 1

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The k most probable classes as (class, probability), most probable first."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(c), float(self.probabilities[c])) for c in order]

    def as_dict(self, k: int = 3) -> dict:
        return {
            "top": [{"class": c, "probability": p} for c, p in self.top(k)],
            "probabilities": self.probabilities,
        }


class Predictor:
    """A checkpoint's model on the CPU, in eval mode, with its metadata.

    Args:
        checkpoint: a checkpoint file or a run directory (its best.pt).
        device: where to run the model ("cpu" by default: one image is too small for a GPU to pay off).
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        self.model, self.config, state = load_model(checkpoint, device)
        kwargs = state.get("model_kwargs", {})
        if kwargs.get("in_channels", 1) != 1 or kwargs.get("image_size", 28) != 28:
            raise CheckpointError(f"{checkpoint}: this model takes {kwargs} images, not 28x28 grey digits")
        self.device = next(self.model.parameters()).device
        self.info = {
            "model": self.config.model,
            "dataset": self.config.dataset,
            "parameters": count_parameters(self.model),
            "epoch": state.get("epoch"),
            "test_accuracy": state.get("metrics", {}).get("test_acc"),
            "checkpoint": str(checkpoint),
        }

    @torch.inference_mode()
    def predict_image(self, image: np.ndarray) -> Prediction:
        """Predict a (28, 28) uint8 image already in MNIST's format."""
        x = normalize(torch.from_numpy(image).to(self.device).unsqueeze(0), self.config.norm_mean, self.config.norm_std)
        probs = torch.softmax(tta_forward(self.model, x, self.config.tta_hflip).float(), dim=1)[0]
        return Prediction(image=image, probabilities=probs.tolist())

    def predict(self, source) -> Prediction:
        """Preprocess any picture of a digit (path, bytes, PIL image or array), then predict it."""
        return self.predict_image(to_mnist(source))
