"""A network's stages as the lecture draws them: every convolution, pooling, ReLU, batch norm, concatenation, sum,
flatten and linear layer its forward runs, each with its true output shape and the arithmetic that gives it
(28 - 5 + 1 = 24, 24 / 2 = 12, 16 + 24 + 24 + 24 = 88, 88 x 4 x 4 = 1408).

`trace` runs the real forward once and records each of those operations as PyTorch calls them (a TorchFunctionMode,
which sees `F.max_pool2d` in a `forward` as well as the `F.conv2d` inside an `nn.Conv2d`), with the module that
called it and the stages its inputs came from. Nothing is written per network: a model built from any modules and
functions is traced as it runs. `group` then folds the stages of each Inception-like block (`BranchedBlock`) into its
branches and each residual block (`SkipBlock`) into its skip and conv paths, by following the data from the block's
concatenation or sum back to where the block began.

Like the switches (cnnlab.models.switches), the hooks a trace adds act only in the calling thread and are removed
when it ends, so a server's threads share one model; the TorchFunctionMode is the calling thread's alone.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnlab.models.blocks import BranchedBlock, SkipBlock
from cnnlab.models.switches import thread_hooks

INPUT = -1  # the stage index of the network's input
SWITCHED = -2  # the index of the first block output that a switch made, not a stage (the next: -3, ...)


def _ops() -> dict[Callable, str]:
    """The PyTorch calls that are stages, by the name of what they do."""
    ops: dict[Callable, str] = {
        torch.conv2d: "conv", F.conv2d: "conv",
        F.max_pool2d: "maxpool", torch.max_pool2d: "maxpool",
        F.avg_pool2d: "avgpool",
        F.adaptive_avg_pool2d: "globalpool", F.adaptive_max_pool2d: "globalpool",
        F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", torch.Tensor.relu: "relu", torch.Tensor.relu_: "relu",
        F.batch_norm: "bn", torch.batch_norm: "bn",
        torch.cat: "concat", torch.concat: "concat",
        torch.add: "sum", torch.Tensor.add: "sum", torch.Tensor.__add__: "sum", torch.Tensor.__radd__: "sum",
        torch.Tensor.add_: "sum", torch.Tensor.__iadd__: "sum",
        torch.mul: "scale", torch.Tensor.mul: "scale", torch.Tensor.__mul__: "scale", torch.Tensor.__rmul__: "scale",
        torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid",
        torch.Tensor.__rsub__: "complement", torch.rsub: "complement",  # 1 - g: a gate's other side
        torch.flatten: "flatten", torch.Tensor.flatten: "flatten",
        F.linear: "linear", torch._C._nn.linear: "linear",
        F.dropout: "dropout",
    }
    for name in ("max_pool2d", "avg_pool2d"):
        native = getattr(torch._C._nn, name, None)
        if native is not None:
            ops[native] = "maxpool" if name.startswith("max") else "avgpool"
    return ops


OPS = _ops()


@dataclass
class Stage:
    """One operation of a forward, for the first image of the batch."""

    index: int  # its place in the forward, from 0
    op: str  # conv | maxpool | avgpool | globalpool | relu | bn | concat | sum | scale | sigmoid | complement | flatten
    # | linear | dropout
    module: str  # the dotted name of the module that ran it ("conv1", "incep1.branch5x5_2", "stem.0"); "" for the network
    inputs: tuple[int, ...]  # the stages its tensor inputs came from, in argument order (INPUT: the network's input)
    shape: tuple[int, ...]  # its output's shape, without the batch axis
    in_shapes: tuple[tuple[int, ...], ...]  # its tensor inputs' shapes, without the batch axis
    settings: dict[str, Any] = field(default_factory=dict)  # kernel, stride, padding, channels (conv, pooling)
    output: torch.Tensor | None = field(default=None, repr=False)  # its output for the first image, as computed
    block: str | None = None  # the innermost Inception-like or residual block it ran in
    name: str = ""  # what the page calls it: the module's name, else the op numbered at its level ("pool1")
    given: tuple[torch.Tensor, ...] = field(default=(), repr=False)  # its inputs for the first image (keep_inputs)

    @property
    def arithmetic(self) -> str:
        return arithmetic(self)


@dataclass
class Branch:
    """One branch of an Inception-like block, or one path of a residual block ("skip", "conv"), as stages."""

    name: str  # "5x5", "skip", "conv"
    stages: list[Stage]  # in forward order; a skip that is the input itself has none
    output: int  # the stage whose output the branch gives (INPUT or the block's input stage for an identity skip)


@dataclass
class Block:
    """An Inception-like or residual block: its branches or paths, then the stages that join them (the
    concatenation; the sum and the ReLU after it)."""

    name: str  # dotted module name: "incep1", "stages.0"
    kind: str  # "inception" | "residual"
    module: nn.Module = field(repr=False)
    branches: list[Branch]
    join: list[Stage]  # the concatenation, or the sum and what follows it in the block
    input: int  # the stage the block reads
    output: torch.Tensor | None = field(default=None, repr=False)  # the block's output as the network goes on with it
    switched: bool = False  # a switch changed that output

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.join[-1].shape) if self.join else ()

    @property
    def arithmetic(self) -> str:
        return self.join[0].arithmetic if self.join else ""


Item = Stage | Block  # what the network shows, in forward order


class _Recorder(TorchFunctionMode):
    """Records the stage calls of one forward, owned by the modules on the calling thread's stack."""

    def __init__(self, names: dict[nn.Module, str], keep_inputs: bool) -> None:
        super().__init__()
        self.names, self.keep_inputs = names, keep_inputs
        self.stack: list[nn.Module] = []
        self.stages: list[Stage] = []
        self.producer: dict[int, int] = {}  # id of a tensor -> the stage that made it
        self.keep: list[torch.Tensor] = []  # the tensors whose ids are in `producer`, alive until the trace ends
        self.paused = 0
        self.blocks_out: dict[nn.Module, torch.Tensor] = {}  # a block -> its output as switched
        self.first_input: torch.Tensor | None = None
        self.switched: list[torch.Tensor] = []  # block outputs that switches made, for the first image

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = OPS.get(func)
        if op is None or self.paused or not isinstance(out, torch.Tensor):
            return out
        data = [a for a in _flat(args) + _flat(list(kwargs.values()))
                if isinstance(a, torch.Tensor) and not isinstance(a, nn.Parameter)]
        if op not in ("concat", "sum", "scale"):
            data = data[:1]  # the input; the rest are a layer's buffers (batch norm's running statistics)
        if not data or data[0].dim() < 2:
            return out
        module = self.stack[-1] if self.stack else None
        stage = Stage(
            index=len(self.stages), op=op, module=self.names.get(module, ""),
            inputs=tuple(self.producer.get(id(t), INPUT) for t in data),
            shape=tuple(out.shape[1:]), in_shapes=tuple(tuple(t.shape[1:]) for t in data),
            settings=_settings(op, func, args, kwargs, module), output=out[0].detach().clone(),
            block=next((self.names[m] for m in reversed(self.stack) if isinstance(m, (BranchedBlock, SkipBlock))), None),
            given=tuple(t[0].detach().clone() for t in data) if self.keep_inputs else (),
        )
        self.stages.append(stage)
        self.producer[id(out)] = stage.index
        self.keep.append(out)
        return out


def _flat(values: Any) -> list:
    out = []
    for v in values:
        out.extend(_flat(v) if isinstance(v, (list, tuple)) else [v])
    return out


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _settings(op: str, func, args, kwargs, module: nn.Module | None) -> dict[str, Any]:
    def arg(i: int, key: str, default: Any) -> Any:
        return kwargs.get(key, args[i] if len(args) > i else default)

    if op == "conv":
        weight = arg(1, "weight", None)
        return {"kernel": tuple(weight.shape[2:]), "stride": _pair(arg(3, "stride", 1)),
                "padding": _pair(arg(4, "padding", 0)), "in_channels": int(weight.shape[1]) * int(arg(6, "groups", 1)),
                "out_channels": int(weight.shape[0]), "groups": int(arg(6, "groups", 1)),
                "bias": arg(2, "bias", None) is not None, "dilation": _pair(arg(5, "dilation", 1))}
    if op in ("maxpool", "avgpool"):
        kernel = _pair(arg(1, "kernel_size", 1))
        stride = arg(2, "stride", None)
        return {"kernel": kernel, "stride": _pair(stride) if stride not in (None, (), []) else kernel,
                "padding": _pair(arg(3, "padding", 0))}
    if op == "linear":
        weight = arg(1, "weight", None)
        return {"in_features": int(weight.shape[1]), "out_features": int(weight.shape[0])}
    if op in ("scale", "complement"):  # by a number (a constant scaling, 1 - g) or by a tensor (a gate)
        number = next((a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)), None)
        return {"factor": float(number)} if number is not None else {}
    if op == "dropout":
        return {"p": float(arg(1, "p", 0.5)), "training": bool(arg(2, "training", True))}
    return {}


class Trace:
    """What a trace saw of one forward: every stage, and the network's top-level items (stages and blocks) in
    forward order. `input`: the batch the network read; `output`: what it returned."""

    def __init__(self, model: nn.Module, x: torch.Tensor, stages: list[Stage], blocks_out: dict[nn.Module, torch.Tensor],
                 producer: dict[int, int], output: Any, switched: list[torch.Tensor] = ()) -> None:
        self.model, self.input, self.stages, self.output, self.switched = model, x, stages, output, list(switched)
        self.items: list[Item] = _group(model, stages, blocks_out, producer)

    def blocks(self) -> list[Block]:
        return [it for it in self.items if isinstance(it, Block)]

    def tensor(self, index: int) -> torch.Tensor:
        """The output of stage `index` for the first image (INPUT: the input image itself; SWITCHED and below: a
        block's output that a switch made)."""
        if index == INPUT:
            return self.input[0]
        return self.switched[SWITCHED - index] if index <= SWITCHED else self.stages[index].output


class Tracing:
    """The context of `tracing`: after the first forward of the model within it, `trace` holds what it saw."""

    trace: Trace | None = None


@contextlib.contextmanager
def tracing(model: nn.Module, hooks: Iterable[tuple[nn.Module, Callable]] = (), keep_inputs: bool = False
            ) -> Iterator[Tracing]:
    """Within the context, the first forward of `model` in the calling thread is traced (later ones, such as the
    mirrored half of a mirror-averaged prediction, are not). `hooks`: forward hooks (module, hook) that change what a
    module outputs, such as the switches (cnnlab.models.switches.switch_hooks): registered first, in this thread
    only; their own work is not traced, and the trace goes on with the outputs they return. `keep_inputs`: each
    stage keeps its inputs too (`Stage.given`), for working out one of its values."""
    names = {m: n for n, m in model.named_modules()}
    recorder = _Recorder(names, keep_inputs)
    result = Tracing()
    me = threading.get_ident()

    def quiet(hook: Callable) -> Callable:
        def hooked(module, args, output):
            recorder.paused += 1
            try:
                return hook(module, args, output)
            finally:
                recorder.paused -= 1

        return hooked

    def enter(module, args):
        if threading.get_ident() != me:
            return
        if module is model and not recorder.stack:
            if result.trace is not None:
                recorder.paused += 1  # a later forward: not traced
            else:
                recorder.producer[id(args[0])] = INPUT
                recorder.keep.append(args[0])
                recorder.first_input = args[0]
        recorder.stack.append(module)

    def leave(module, args, output):
        if threading.get_ident() != me:
            return
        if recorder.stack and recorder.stack[-1] is module:
            recorder.stack.pop()
        if isinstance(module, (BranchedBlock, SkipBlock)) and isinstance(output, torch.Tensor) and not recorder.paused:
            recorder.blocks_out[module] = output
            if id(output) not in recorder.producer:  # no stage made it: a switch did
                recorder.producer[id(output)] = SWITCHED - len(recorder.switched)
                recorder.switched.append(output[0].detach().clone())
            recorder.keep.append(output)
        if module is model and not recorder.stack:
            if result.trace is None:
                result.trace = Trace(model, recorder.first_input.detach(), recorder.stages, recorder.blocks_out,
                                     recorder.producer, output, recorder.switched)
                recorder.keep = []
            else:
                recorder.paused -= 1

    handles = []
    with thread_hooks([(m, quiet(h)) for m, h in hooks]), recorder:
        try:
            for module in model.modules():
                handles.append(module.register_forward_pre_hook(enter))
                handles.append(module.register_forward_hook(leave))
            yield result
        finally:
            for handle in handles:
                handle.remove()


def trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """Run `model(x)` once (no gradients) and return what it computed, stage by stage."""
    with torch.no_grad(), tracing(model) as traced:
        model(x)
    assert traced.trace is not None
    return traced.trace


# ---- grouping -------------------------------------------------------------------------------------------------

def _group(model: nn.Module, stages: list[Stage], blocks_out: dict, producer: dict) -> list[Item]:
    """The top-level items: each stage outside any block, and each outermost block folded into a Block."""
    modules = dict(model.named_modules())
    items: list[Item] = []
    i = 0
    while i < len(stages):
        s = stages[i]
        if s.block is None:
            items.append(s)
            i += 1
            continue
        top = _outermost(s.block, modules)
        j = i
        while j < len(stages) and stages[j].block is not None and _outermost(stages[j].block, modules) == top:
            j += 1
        items.append(_block(top, modules[top], stages[i:j], blocks_out, producer))
        i = j
    _name(items, model)
    return items


def _outermost(block: str, modules: dict[str, nn.Module]) -> str:
    """The outermost block containing the block named `block` (a block inside a block folds into the outer)."""
    parts = block.split(".")
    for k in range(1, len(parts) + 1):
        name = ".".join(parts[:k])
        if isinstance(modules.get(name), (BranchedBlock, SkipBlock)):
            return name
    return block


def _block(name: str, module: nn.Module, inside: list[Stage], blocks_out: dict, producer: dict) -> Block:
    ids = {s.index for s in inside}
    first = inside[0]
    # the block's input: what its first stages read from outside it
    outside = [k for s in inside for k in s.inputs if k not in ids]
    block_input = outside[0] if outside else INPUT
    kind = "inception" if isinstance(module, BranchedBlock) else "residual"
    joiner = "concat" if kind == "inception" else "sum"
    join_at = next((k for k in range(len(inside) - 1, -1, -1) if inside[k].op == joiner
                    and inside[k].block == name), None)
    if join_at is None:  # a block whose forward the trace could not follow: all of it as one path
        branches = [Branch("all", inside, inside[-1].index)]
        join: list[Stage] = []
    else:
        join = inside[join_at:]
        ends = list(join[0].inputs)
        names = list(module.branch_names) if kind == "inception" else ["conv", "skip"]  # forward: out + identity
        if len(names) != len(ends):
            names = [f"input {k + 1}" for k in range(len(ends))]
        by_index = {s.index: s for s in inside[:join_at]}
        taken: set[int] = set()
        branches = []
        for bname, end in zip(names, ends):
            members = _ancestors(end, by_index) - taken
            taken |= members
            branches.append(Branch(bname, [by_index[k] for k in sorted(members)], end))
        if kind == "residual":
            branches.reverse()  # skip first, as the lecture draws it: x, then F(x)
    out = blocks_out.get(module)
    switched = out is not None and join and producer.get(id(out)) != join[-1].index
    block = Block(name, kind, module, branches, join, block_input,
                  out[0].detach().clone() if out is not None else (join[-1].output if join else first.output),
                  bool(switched))
    return block


def _ancestors(end: int, by_index: dict[int, Stage]) -> set[int]:
    seen: set[int] = set()
    todo = [end]
    while todo:
        k = todo.pop()
        if k in by_index and k not in seen:
            seen.add(k)
            todo.extend(by_index[k].inputs)
    return seen


def _name(items: list[Item], model: nn.Module) -> None:
    """Name each stage: its module's name where the module runs that one stage ("conv1", "fc", "stem.0"), else
    the op numbered within its block or the network ("pool1", "relu2", "incep1.concat")."""
    every = [s for it in items for s in (_stages_of(it) if isinstance(it, Block) else [it])]
    modules = dict(model.named_modules())
    runs: dict[str, int] = {}
    for s in every:
        runs[s.module] = runs.get(s.module, 0) + 1
    word = {"maxpool": "pool"}
    totals: dict[tuple[str, str], int] = {}
    for s in every:
        key = (s.block or "", word.get(s.op, s.op))
        totals[key] = totals.get(key, 0) + 1
    seen: dict[tuple[str, str], int] = {}
    for s in every:
        if s.module and runs[s.module] == 1 and not isinstance(modules.get(s.module), (BranchedBlock, SkipBlock)):
            s.name = s.module
            continue
        key = (s.block or "", word.get(s.op, s.op))
        seen[key] = seen.get(key, 0) + 1
        base = key[1] + (str(seen[key]) if totals[key] > 1 else "")
        s.name = f"{s.block}.{base}" if s.block else base


def _module(model: nn.Module, name: str) -> nn.Module | None:
    return dict(model.named_modules()).get(name)


def _stages_of(block: Block) -> list[Stage]:
    return sorted([s for b in block.branches for s in b.stages] + block.join, key=lambda s: s.index)


# ---- the arithmetic -------------------------------------------------------------------------------------------

def _size_rule(n: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> str:
    """How a convolution or pooling turns a side of n pixels into its output's side."""
    span = dilation * (kernel - 1) + 1
    inner = f"{n}" + (f" + 2×{padding}" if padding else "") + f" − {span}"
    total = n + 2 * padding - span
    out = total // stride + 1
    if stride == 1:
        return f"{inner} + 1 = {out}"
    if kernel == stride and padding == 0 and n % stride == 0:
        return f"{n} / {stride} = {out}"
    floor = "⌊" if total % stride else "("
    close = "⌋" if total % stride else ")"
    return f"{floor}{inner}{close} / {stride} + 1 = {out}" if floor == "(" else f"⌊({inner}) / {stride}⌋ + 1 = {out}"


def arithmetic(stage: Stage) -> str:
    """The rule that gives the stage's output shape from its input's, with the numbers: "28 − 5 + 1 = 24"."""
    s, st = stage, stage.settings
    if s.op in ("conv", "maxpool", "avgpool") and len(s.in_shapes[0]) == 3:
        _, h, w = s.in_shapes[0]
        dil = st.get("dilation", (1, 1))
        rules = [_size_rule(n, st["kernel"][k], st["stride"][k], st["padding"][k], dil[k]) for k, n in enumerate((h, w))]
        side = rules[0] if rules[0] == rules[1] else f"{rules[0]}; {rules[1]}"
        if s.op == "conv":
            return f"{side}; {st['out_channels']} kernels of {st['in_channels']}×{st['kernel'][0]}×{st['kernel'][1]}"
        return side
    if s.op == "globalpool":
        c, h, w = s.in_shapes[0]
        return f"{h}×{w} → {'×'.join(map(str, s.shape[1:])) or '1'} (the mean of each map)"
    if s.op == "concat":
        return " + ".join(str(shape[0]) for shape in s.in_shapes) + f" = {s.shape[0]}"
    if s.op == "flatten":
        return " × ".join(str(n) for n in s.in_shapes[0]) + f" = {s.shape[0]}"
    if s.op == "linear":
        return f"{s.settings['in_features']} → {s.settings['out_features']}"
    if s.op == "relu":
        return "max(0, x)"
    if s.op == "bn":
        return "γ·(x − μ)/σ + β"
    if s.op == "sum":
        return "F(x) + x" if len(s.inputs) == 2 else "sum"
    if s.op == "scale":
        if "factor" in st:
            return f"x · {st['factor']:g}"
        return "x · g" if len(s.inputs) == 2 else "x · a"  # a product of two maps: one gates the other
    if s.op == "complement":
        return f"{st.get('factor', 1):g} − g"
    if s.op == "dropout":
        return f"each value kept with probability {1 - st.get('p', 0.5):g}, ×{1 / (1 - st.get('p', 0.5)):g}" \
            if st.get("training") else "the identity (evaluation)"
    if s.op == "sigmoid":
        return "1 / (1 + e^−x)"
    return ""


# ---- in words -------------------------------------------------------------------------------------------------

OP_WORDS = {"conv": "convolution", "maxpool": "max pooling", "avgpool": "average pooling",
            "globalpool": "global average pooling", "relu": "ReLU", "bn": "batch norm", "concat": "concatenation",
            "sum": "sum", "flatten": "flatten", "linear": "linear", "scale": "scaling", "sigmoid": "sigmoid",
            "complement": "one minus",
            "dropout": "dropout"}


TITLES = {"inception": "Inception block", "residual": "residual block", "dense": "dense layer"}  # a block's TITLE


def describe(op: str, settings: dict) -> str:
    """What a stage does, in a few words: "5×5 convolution, padding 2", "2×2 max pooling"."""
    word = OP_WORDS.get(op, op)
    if op in ("conv", "maxpool", "avgpool") and settings.get("kernel"):
        k, stride = settings["kernel"], settings.get("stride", settings["kernel"])
        extra = []
        if stride[0] != (1 if op == "conv" else k[0]):
            extra.append(f"stride {stride[0]}")
        if settings.get("padding", (0, 0))[0]:
            extra.append(f"padding {settings['padding'][0]}")
        return f"{k[0]}×{k[1]} {word}" + (", " + ", ".join(extra) if extra else "")
    return word


def lines(trace: Trace) -> list[str]:
    """The stages of a trace, one line each, `name  what it does  -> shape  arithmetic`, a block's branches or paths
    and its join indented under it: what the notebook prints and `plot_inside` writes beside the maps, the same
    stages, shapes and arithmetic as the web page's cards."""
    def shape(s: Iterable[int]) -> str:
        return " × ".join(map(str, s))

    def line(indent: str, name: str, what: str, out: Iterable[int], rule: str) -> str:
        return f"{indent}{name:<{max(1, 24 - len(indent))}} {what:<34} -> {shape(out):<14} {rule}".rstrip()

    out = [line("", "input", "image", tuple(trace.input.shape[1:]), "")]
    for item in trace.items:
        if isinstance(item, Stage):
            out.append(line("", item.name, describe(item.op, item.settings), item.shape, item.arithmetic))
            continue
        what = TITLES.get(getattr(item.module, "TITLE", item.kind), item.kind)
        out.append(line("", item.name, what, item.shape, item.arithmetic))
        for branch in item.branches:
            if not branch.stages:
                out.append(line("    ", branch.name, "the block's input itself (identity)",
                                tuple(trace.tensor(item.input).shape), ""))
            for s in branch.stages:
                out.append(line("    ", f"{branch.name}: {_within(s.name, item.name)}", describe(s.op, s.settings),
                                s.shape, s.arithmetic))
        for s in item.join:
            out.append(line("    ", _within(s.name, item.name), describe(s.op, s.settings), s.shape, s.arithmetic))
    return out


def _within(name: str, block: str) -> str:
    """A stage's name within its block: "branch5x5_2" for "incep1.branch5x5_2"."""
    return name[len(block) + 1:] if name.startswith(block + ".") else name


def stage_lines(model: nn.Module, input_shape: tuple[int, int, int] = (1, 28, 28)) -> list[str]:
    """`lines` of one forward of a blank image of `input_shape` (C, H, W) through `model`: its stages and shapes
    without any data (the shapes do not depend on the picture)."""
    was_training = model.training
    model.eval()
    try:
        return lines(trace(model, torch.zeros(1, *input_shape)))
    finally:
        model.train(was_training)
