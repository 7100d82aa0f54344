"""What a trained model says of a picture: a Prediction (its probabilities, most probable first through `top`), each of
its Guesses, and the Picture types that predict reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


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
