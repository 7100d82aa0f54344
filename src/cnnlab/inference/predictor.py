"""A trained model ready to answer: loaded once, then picture in, classes and probabilities out.

The model itself (loading, preparing a picture, predicting) is cnnlab.runs' TrainedModel; a Predictor adds what a
server and `cnnlab predict` report about it, and saving the picture the model saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.tensors.pictures import ImageError
from cnnlab.runs.prediction import Guess, Picture, Prediction
from cnnlab.runs.trained import TrainedModel

__all__ = ["Guess", "Prediction", "Predictor", "input_names"]


class Predictor:
    """A trained model (cnnlab.runs.load) ready to answer: what `cnnlab predict` and a server report about it
    (`info`), pictures in, predictions out, and the picture the model saw saved beside them.

    Args:
        trained: the model, loaded where it should run (the CPU is best for one picture at a time: too little work
            for a GPU to pay off).
    """

    def __init__(self, trained: TrainedModel) -> None:
        self.trained = trained
        self.info = trained.describe()  # no path: a server passes this on to its clients

    def __repr__(self) -> str:
        return f"Predictor({self.trained!r})"

    def predict_image(self, image: np.ndarray) -> Prediction:
        """Predict a uint8 image already in the training data's format ((H, W) grey or (C, H, W))."""
        return self.trained.predict_prepared(image)

    def predict_file(self, path: str | Path, save_to: Path | None = None, name: str | None = None) -> Prediction:
        """Predict an image file and, given a directory `save_to`, save there the image the model saw, as
        `name`-WxH.png (`name`: the file's name by default; see `input_names` for many files).

        Raises ImageError for any problem of this file alone (unreadable, not an image, cannot be saved), so
        that a caller going through many files can report it and go on.
        """
        pred = self.predict(path)
        if save_to is not None:
            try:
                pred.save_image(save_to, name or Path(path).name)
            except OSError as e:
                raise ImageError(f"cannot save the image the model saw ({e.strerror or e})") from None
        return pred

    def predict(self, source: Picture) -> Prediction:
        """Preprocess one picture (path, bytes, PIL image; a grey array for MNIST and Fashion-MNIST models), then predict it."""
        return self.predict_image(self.trained.prepare(source))


def input_names(paths: list[str | Path]) -> list[str]:
    """The name under which each image's input is saved: the file's name with its extension, so that a.png and
    a.jpg stay apart, and -2, -3, ... after a name an earlier path of the list already has (x/a.png, y/a.png).
    No saved input then replaces another of the same command."""
    names: list[str] = []
    for p in paths:
        base = name = Path(p).name or "image"
        n = 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
