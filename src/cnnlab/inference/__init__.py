"""Using a trained model: predict pictures (Predictor, Prediction), prepare them as the training data was
(preprocess), and export it to TorchScript or ONNX (export_model)."""

from cnnlab.inference.export import export_model
from cnnlab.inference.predictor import Guess, Prediction, Predictor

__all__ = ["Guess", "Prediction", "Predictor", "export_model"]
