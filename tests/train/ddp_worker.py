"""A training process for the data-parallel and kill tests: trains on a small synthetic MNIST-shaped set
through the library (fit or resume), then saves this process's own final weights as rank<R>.pt.

Run by torchrun (or alone) from tests/train/test_distributed.py and the resume tests:
    python ddp_worker.py fit OUT [--epochs E] [--batch-size B] [--model M] [--images N]
    python ddp_worker.py resume OUT RUN_DIR
Synthetic data is enough here: these tests compare weights between runs, never accuracy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from cnnlab.data import MNIST
from cnnlab.train import distributed, fit, make_config, resume


def synthetic(images: int) -> MNIST:
    g = torch.Generator().manual_seed(1234)
    return MNIST(
        train_images=torch.randint(0, 256, (images, 28, 28), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 10, (images,), generator=g),
        test_images=torch.randint(0, 256, (200, 28, 28), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 10, (200,), generator=g),
        source="synthetic (tests)",
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("fit", "resume"))
    p.add_argument("out")
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="basic_cnn")
    p.add_argument("--images", type=int, default=1200)
    a = p.parse_args()
    torch.set_num_threads(1)  # two processes on a small machine
    data = synthetic(a.images)
    if a.mode == "fit":
        cfg = make_config(a.model, epochs=a.epochs, batch_size=a.batch_size, val_size=200, device="cpu", seed=7)
        result = fit(cfg, data, out_root=a.out, progress=False)
    else:
        result = resume(a.run_dir, data, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result.network.state_dict(), Path(a.out) / f"rank{rank}.pt")
    if rank == 0:
        (Path(a.out) / "run_dir.txt").write_text(str(result.run_dir))


if __name__ == "__main__":
    main()
    if distributed.joined():
        distributed.leave(0)  # as `cnnlab train` does: no interpreter teardown beside gloo's threads
