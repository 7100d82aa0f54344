"""The course's training loop, reproduced faithfully without torchvision, as the baseline of speed.py.

What the lecture's code does: a per-sample Dataset whose transform is ToTensor() then
Normalize((0.1307,), (0.3081,)), i.e. uint8 array -> PIL image -> float tensor / 255 -> standardised;
DataLoader(batch_size=64, shuffle=True) for training and (batch_size=64, shuffle=False) for the test;
SGD(lr=0.01, momentum=0.5); CrossEntropyLoss; 10 epochs, each followed by a pass over the test set.
The models are cnnlab's (the lecture's architectures) in the default NCHW layout.

Run as a script it prints one JSON line per epoch (test accuracy and the wall-clock time, so that the
caller can measure from its own process start), then one with the steady-state training throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import load_mnist
from cnnlab.models import create_model


class CourseMNIST(Dataset):
    """One sample at a time, as torchvision's MNIST with ToTensor + Normalize delivers it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images.numpy()
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i])  # mode "L"  # what torchvision's MNIST.__getitem__ does
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).float().div(255).unsqueeze(0)  # ToTensor
        x = (x - 0.1307) / 0.3081  # Normalize((0.1307,), (0.3081,))
        return x, self.labels[i]


def run(model_name: str, epochs: int, seed: int, emit) -> None:
    torch.manual_seed(seed)
    data = load_mnist(progress=False)
    train = DataLoader(CourseMNIST(data.train_images, data.train_labels), batch_size=64, shuffle=True)
    test = DataLoader(CourseMNIST(data.test_images, data.test_labels), batch_size=64, shuffle=False)
    model = create_model(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    step_times: list[float] = []
    for epoch in range(1, epochs + 1):
        model.train()
        t_prev = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            now = time.perf_counter()
            step_times.append(now - t_prev)  # includes fetching the batch: that is the course's cost
            t_prev = now
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(x).argmax(1) == y).sum().item()
        emit({"epoch": epoch, "test_acc": correct / len(test.dataset), "time": time.time()})
    # Steady state: the median step of the last epoch (the first steps of a run warm caches up).
    last = sorted(step_times[-len(train) :])
    emit({"images_per_s": 64 / last[len(last) // 2]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    run(args.model, args.epochs, args.seed, lambda d: print(json.dumps(d), flush=True))


if __name__ == "__main__":
    sys.exit(main())
