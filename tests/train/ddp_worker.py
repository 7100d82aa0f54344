"""A training process for the data-parallel and kill tests: trains on a small synthetic MNIST-shaped set
through the library (fit or resume), then saves this process's own final weights as rank<R>.pt.

Run by torchrun (or alone) from tests/train/test_distributed.py and the resume tests:
    python ddp_worker.py fit OUT [--epochs E] [--batch-size B] [--model M] [--images N] [--float64] [--record-steps K]
                             [--ema DECAY]
    python ddp_worker.py resume OUT RUN_DIR [--float64]
    python ddp_worker.py train OUT [fit's options] [--run-name NAME] [--checkpoint-every S] [--log-every K]
(train: through cnnlab.train.train, as `cnnlab train` does: a named run that stopped is continued by the same command.)
Synthetic data is enough here: these tests compare weights between runs, never accuracy.

--float64 trains in float64 (torch's default dtype, which the model and the batches follow). In float32, 1 and N
processes agree to rounding (1e-7) until a ReLU or a max-pool meets two values that rounding orders differently;
that discrete choice changes a gradient by about 1e-4 of its size, and training amplifies it (see the tests).
In float64 rounding is 1e-16 and no such choice is met in a short run, so N processes must match 1 to 1e-12 there
on any CPU, and any error in how a batch is split shows as a large difference.
--record-steps K saves the gradient every optimiser step applies, for the first K steps, as grads<R>.pt
(through torch's global optimiser hook: the worker only observes the run).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cnnlab.train import distributed, fit, make_config, resume, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: torchrun runs this file outside pytest
from support.data import synthetic_mnist  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("fit", "resume", "train"))
    p.add_argument("out")
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="basic_cnn")
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--float64", action="store_true")
    p.add_argument("--record-steps", type=int, default=0)
    p.add_argument("--run-name")
    p.add_argument("--checkpoint-every", type=float, default=0.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.0)  # the run's network is then the average of its weights
    a = p.parse_args()
    torch.set_num_threads(1)  # two processes on a small machine
    if a.float64:
        torch.set_default_dtype(torch.float64)
    grads: list[torch.Tensor] = []
    if a.record_steps:
        def record(optimizer, args, kwargs) -> None:
            if len(grads) < a.record_steps:
                grads.append(torch.cat([q.grad.detach().flatten() for g in optimizer.param_groups for q in g["params"]]))

        register_optimizer_step_post_hook(record)
    data = synthetic_mnist(train=a.images, test=200, seed=1234)  # the same set in every process
    # float32 steps on every CPU (auto is bfloat16 where the CPU has bfloat16 instructions): the tests compare the
    # processes' float32 rounding
    cfg = make_config(a.model, epochs=a.epochs, batch_size=a.batch_size, val_size=200, device="cpu", seed=7,
                      run_name=a.run_name, checkpoint_every=a.checkpoint_every, log_every=a.log_every, ema=a.ema,
                      amp="off")
    if a.mode == "fit":
        result = fit(cfg, data, out_root=a.out, progress=False)
    elif a.mode == "train":
        result = train([cfg], data=data, out_root=a.out, progress=False).results[0]
    else:
        result = resume(a.run_dir, data, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result.network.state_dict(), Path(a.out) / f"rank{rank}.pt")
    if a.record_steps:
        torch.save(grads, Path(a.out) / f"grads{rank}.pt")
    if rank == 0:
        (Path(a.out) / "run_dir.txt").write_text(str(result.run_dir))


if __name__ == "__main__":
    main()
    if distributed.joined():
        distributed.leave(0)  # as `cnnlab train` does: no interpreter teardown beside gloo's threads
