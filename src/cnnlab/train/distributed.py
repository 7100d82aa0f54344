"""Data-parallel training on torch.distributed: the process group, who does what, and how a batch is split.

`torchrun --nproc-per-node N -m cnnlab train ...` starts N processes and tells each its RANK, WORLD_SIZE and
LOCAL_RANK (and where to meet) through the environment; a plain `cnnlab train` has none of these and runs as
a world of one, with no process group at all. The rules every rank follows:

- Every rank draws the same permutation of each epoch, and the same augmentation, from the shared seed; a
  global batch of B images is cut into N contiguous parts, one per rank. When N does not divide B the first
  B mod N ranks take one image more, and each rank's loss is weighted by its share, so that a step is the
  same step a single process takes with batch B (DistributedDataParallel averages the N gradients).
- Rank 0 alone writes the run directory and shows progress; the ranks on one machine fetch the data set
  after its local rank 0 has (so N processes never write one cache at the same time).
- A lost peer makes the others fail fast: gloo and NCCL report a closed connection at the next collective,
  and every collective has a timeout (CNNLAB_DIST_TIMEOUT seconds, default 600, long enough for a
  first download of the data set on local rank 0 while the others wait).
- A process that joined a group leaves with `leave(code)`, not through the interpreter's normal teardown:
  once a model has been wrapped in DistributedDataParallel (PyTorch 2.13), destroy_process_group no longer
  ends gloo's three threads (something in DDP's C++ side keeps the group), so they still run while the
  interpreter and the C++ runtime tear down. A rank that had finished and saved its work was seen to abort
  there now and then ("terminate called without an active exception", SIGABRT, exit -6: once in CI, 2 of
  20 runs here, then none in 190). `leave` flushes the output and ends the process at once, as
  multiprocessing's child processes do, so no teardown runs beside those threads.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn

import torch
import torch.distributed as dist
from torch.distributed.rendezvous import rendezvous

TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
_joined = False  # whether this process joined a process group (init with torchrun's environment)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batch_part(self, batch_size: int) -> tuple[int, int]:
        """(first row, rows) of a global batch of `batch_size` that this rank trains on."""
        if batch_size < self.world_size:
            raise ValueError(
                f"a batch of {batch_size} images cannot be split among {self.world_size} processes; "
                f"use --batch-size {self.world_size} or more"
            )
        base, extra = divmod(batch_size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, base + (1 if self.rank < extra else 0)

    def split_part(self, n: int) -> slice:
        """The contiguous part of n items (an evaluation split) this rank evaluates."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


SINGLE = World()


def world_from_env() -> World:
    """The World torchrun describes in the environment; a world of one when the variables are absent."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers ({e})") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} is not within WORLD_SIZE={size}")
    return World(rank, size, local)


def rendezvous_id() -> str | None:
    """The id of the rendezvous torchrun's agent joined (its --rdzv-id; a fresh one per --standalone agent), the same
    in every group it starts after a failure; None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def restarted() -> bool:
    """Whether torchrun's agent started this group again after a failure (--max-restarts)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA) and return this rank's World and
    device: on CUDA, GPU LOCAL_RANK of its machine. Without torchrun: (SINGLE, device), nothing joined."""
    world = world_from_env()
    if not world.distributed:
        return SINGLE, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on CPUs (gloo) or CUDA GPUs (NCCL), not on {device.type}")
    global _joined
    _joined = True
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = device  # binds the communicator to this GPU at once
        timeout = datetime.timedelta(seconds=timeout_seconds())
        store, rank, size = next(rendezvous("env://", timeout=timeout))
        # Under torchrun the workers of every group the agent starts share the agent's store (PyTorch 2.13), and
        # a group started again after a failure found the dead group's addresses in it: its ranks connected to
        # closed ports ("Connection refused") or waited on them. Each group's keys go under its own prefix.
        store = dist.PrefixStore(f"cnnlab/group{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout, **kwargs)
    return world, device


def joined() -> bool:
    return _joined


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End a process that joined a process group: flush its output, then exit without the interpreter's
    teardown (see the module's notes). Every file the run writes is complete by then (atomic renames)."""
    shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


@contextlib.contextmanager
def local_main_first(world: World) -> Iterator[None]:
    """Run the body on each machine's local rank 0 first, then on its other ranks (fetching a data set
    into a machine's cache once)."""
    if world.local_rank != 0:
        barrier(world)
    yield
    if world.local_rank == 0:
        barrier(world)


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all ranks, in place; the tensor itself for a world of one."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(t: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's value of a tensor, stacked in rank order (one row for a world of one)."""
    if not world.distributed:
        return t.unsqueeze(0).clone()
    out = [torch.empty_like(t) for _ in range(world.world_size)]
    dist.all_gather(out, t)
    return torch.stack(out)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's value of a small picklable object, on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model in a distributed run; the model itself otherwise."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def is_lost_peer(err: BaseException) -> bool:
    """Whether an exception is torch.distributed reporting a failed collective (a peer died or timed out)."""
    return isinstance(err, getattr(dist, "DistError", ())) or (
        isinstance(err, RuntimeError) and any(s in str(err) for s in ("Connection closed by peer", "Timed out", "gloo"))
    )


def all_reduce_min(t: torch.Tensor, world: World) -> torch.Tensor:
    """The smallest value of a tensor over all ranks, in place."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t
