"""The switchable parts of a model and the hooks that switch them off, on the real blocks.

A *part* is what a student can switch off:
- a branch of an Inception-like block (`BranchedBlock`), "incep1.5x5": its channels of the block's output are zeros;
- a residual block's skip (`SkipBlock`), "rblock2.skip": the block outputs relu(F(x)), its conv path alone (the block's
  own `after` in place of the ReLU: nothing in a pre-activation unit);
- a residual block's conv path, "rblock2.conv": the block outputs relu(skip(x)), its skip alone.

The model runs on its real modules, through forward hooks that call the blocks' own `branches`/`paths` split, so any
model built from those two interfaces works without a copy of its code. Hooks are state of a module that a server
shares between requests, so two rules keep it safe:
- every hook is removed when the call ends, also when it raises (a context manager);
- a hook acts only in the thread that registered it, so another thread's forward (a predict, or an explain with other
  parts switched off) passes it by. PyTorch copies a module's hooks into a tuple before calling them, so hooks added
  and removed by one thread while another runs the model do not disturb it. Unlike a lock, this lets concurrent
  requests run side by side (benchmarks/inside.py measures the cost of one call).

`switched_off` is the switch for any caller (the branch analysis, a test); the inside view
(cnnlab.inference.explain) adds hooks of its own that record what each block computed, through `switch_hooks`.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from cnnlab.models.blocks import BranchedBlock, SkipBlock


# ---- parts: what can be switched off -------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """A part of a model that can be switched off."""

    name: str  # "<block>.<branch>" ("incep1.5x5"), "<block>.skip" or "<block>.conv" ("stages.1.skip")
    block: str  # the block's dotted module name: "incep1", "rblock2", "stages.1"
    kind: str  # "branch" | "skip" | "conv"


def parts(model: nn.Module) -> list[Part]:
    """Every switchable part of `model`: each Inception-like block's branches, in concatenation order, and each
    residual block's skip and conv path, blocks in the order the model registers them (its forward order for every
    registered model)."""
    out: list[Part] = []
    for name, module in model.named_modules():
        if isinstance(module, BranchedBlock):
            out += [Part(f"{name}.{branch}", name, "branch") for branch in module.branch_names]
        elif isinstance(module, SkipBlock):
            out += [Part(f"{name}.{path}", name, path) for path in ("skip", "conv")]
    return out


class UnknownPart(ValueError):
    """Part names the model does not have. `unknown`: those names; `valid`: the model's part names."""

    def __init__(self, unknown: Iterable[object], valid: Iterable[str]) -> None:
        self.unknown, self.valid = tuple(unknown), tuple(valid)
        names = ", ".join(repr(n) for n in self.unknown)
        choose = (f"choose from {', '.join(self.valid)}" if self.valid
                  else "this model has no parts to switch off (no Inception or residual blocks)")
        super().__init__(f"unknown part{'s' if len(self.unknown) > 1 else ''} {names}; {choose}")


def resolve_parts(model: nn.Module, silence: Iterable[str] | str) -> list[Part]:
    """The parts named in `silence` (one name or several; repeats count once), in `parts` order.

    Raises UnknownPart naming every name the model does not have and listing those it has.
    """
    names = [silence] if isinstance(silence, str) else list(silence)
    known = parts(model)
    valid = {p.name for p in known}
    unknown = []  # in the order given, each once; anything but a string (a number from JSON) is unknown too
    for n in names:
        if (not isinstance(n, str) or n not in valid) and n not in unknown:
            unknown.append(n)
    if unknown:
        raise UnknownPart(unknown, [p.name for p in known])
    return [p for p in known if p.name in names]


# ---- hooks that act in one thread only ------------------------------------------------------------------------

Hook = Callable[[nn.Module, tuple, object], object]


@contextlib.contextmanager
def thread_hooks(hooks: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Forward hooks that act only in the calling thread, registered in order (a hook sees the output the hooks
    before it on the same module returned) and all removed on leaving, also on an error."""
    me = threading.get_ident()

    def only_here(hook: Hook) -> Hook:
        def run(module, args, output):
            return hook(module, args, output) if threading.get_ident() == me else None

        return run

    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(only_here(hook)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _block_hook(block: nn.Module, off: set[str], record: dict | None) -> Hook:
    """The hook that switches the parts `off` of `block` (branch names, or "skip" and "conv") and, with `record`,
    keeps what the block computed before its switches: its output (a BranchedBlock) or (skip, conv) (a SkipBlock).
    Only the first call is kept: a mirror-averaged prediction runs the model twice."""
    if isinstance(block, SkipBlock):
        def hook(module, args, output):
            skip, conv = module.paths(args[0])  # the block's own split, computed again: it cannot be read from forward
            if record is not None:
                record.setdefault(module, (skip, conv))
            if not off:
                return None
            kept = [path for name, path in (("skip", skip), ("conv", conv)) if name not in off]
            return module.after(kept[0]) if kept else torch.zeros_like(output)

        return hook

    slices = [block.branch_slices()[name] for name in off]

    def hook(module, args, output):
        if record is not None:
            record.setdefault(module, output)
        if not slices:
            return None
        output = output.clone()
        for s in slices:
            output[:, s] = 0
        return output

    return hook


def switch_hooks(model: nn.Module, off: list[Part], record: dict | None = None,
                 blocks: Iterable[nn.Module] = ()) -> list[tuple[nn.Module, Hook]]:
    """One hook per block with a part `off`, and per block in `blocks` (recorded even with nothing off), for
    `thread_hooks`. With `record`, each keeps there what its block computed before the switches: its output (a
    BranchedBlock) or (skip, conv) (a SkipBlock), by block."""
    modules = dict(model.named_modules())
    by_block: dict[nn.Module, set[str]] = {m: set() for m in blocks}
    for part in off:
        by_block.setdefault(modules[part.block], set()).add(part.name.rsplit(".", 1)[1])
    return [(block, _block_hook(block, names, record)) for block, names in by_block.items()]


@contextlib.contextmanager
def switched_off(model: nn.Module, silence: Iterable[str] | str) -> Iterator[nn.Module]:
    """Within the context, in this thread only, the named parts of `model` are switched off (see the module's
    docstring); other threads see the model as it is. Raises UnknownPart before anything changes."""
    off = resolve_parts(model, silence)
    with thread_hooks(switch_hooks(model, off)):
        yield model
