"""cnnlab: the networks of the lecture "CNN, advanced", trained fast on real MNIST."""

__version__ = "0.1.0"
