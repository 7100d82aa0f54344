"""Using a trained model: predict pictures (Predictor, Prediction; each data set's entry says how a picture is
prepared, data/tensors/pictures.py), look inside it (explain: every layer's maps, with parts switched off), and
export it to TorchScript or ONNX (export_model)."""

from cnnlab.inference.export import export_model
from cnnlab.inference.predictor import Guess, Prediction, Predictor

__all__ = ["Guess", "Prediction", "Predictor", "export_model"]
