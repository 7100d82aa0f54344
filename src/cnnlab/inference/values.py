"""How one value of the inside view was computed: click a value of a feature map, see its arithmetic.

For a convolution's value: the input window it reads (zero padding included), the kernel, the products and their
sum, the bias, and the value; for a 1x1 convolution that is a mix across channels, and `macs` sets its cost beside
a 5x5's. Then what the next stages do to it, as the forward runs them: the pooling window it falls in (and whether it
is the maximum), the ReLU, a batch norm. A value of a pooling, ReLU or batch norm is traced back to the convolution
it came from first; a value of a block's output to its concatenation (which branch, which channel) or its sum (skip
plus conv path).

Every number comes from the real forward of the picture (cnnlab.models.stages, with the parts switched off as
asked), so the arithmetic can be checked against the model's own value: the products' sum plus the bias is the
convolution's output.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from cnnlab.models.stages import INPUT, Block, Stage, Trace, tracing
from cnnlab.models.switches import resolve_parts, switch_hooks
from cnnlab.runs.prediction import Picture
from cnnlab.runs.trained import TrainedModel

ELEMENTWISE = ("relu", "bn")  # a value at (c, y, x) depends on the value at (c, y, x) of the input alone
FOLLOWED = ("relu", "bn", "maxpool", "avgpool")  # what is shown after a value, as the forward runs it
MAX_FOLLOWED = 4


class NoSuchValue(ValueError):
    """A stage or position the picture's forward does not have."""


def explain_value(trained: TrainedModel, picture: Picture, stage: int, channel: int, y: int, x: int,
                  silence: Iterable[str] | str = ()) -> dict[str, Any]:
    """How the value at (channel, y, x) of stage `stage` (an index of the forward's stages, as `explain` gives
    them) was computed for `picture`, with the parts in `silence` off: the steps from the stage it comes from to the
    last pooling or ReLU that follows it, each with its numbers (see the module's docstring). JSON-ready.

    Raises NoSuchValue for a stage or position out of range, and what `explain` raises for a bad picture or part."""
    model = trained.network
    off = resolve_parts(model, silence)
    image = trained.prepare(picture)
    with tracing(model, switch_hooks(model, off), keep_inputs=True) as traced:
        trained.forward_prepared(image)
    trace = traced.trace
    for name, v in (("stage", stage), ("channel", channel), ("y", y), ("x", x)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise NoSuchValue(f"{name} must be a whole number, got {v!r}")
    if not 0 <= stage < len(trace.stages):
        raise NoSuchValue(f"no stage {stage}: this network's forward has stages 0 to {len(trace.stages) - 1}")
    clicked = trace.stages[stage]
    out = clicked.output
    if out.dim() != 3:
        raise NoSuchValue(f"stage {stage} ({clicked.name}) is a vector, not a feature map")
    c, h, w = out.shape
    if not (0 <= channel < c and 0 <= y < h and 0 <= x < w):
        raise NoSuchValue(f"({channel}, {y}, {x}) is outside {clicked.name}'s {c} x {h} x {w} maps")

    with torch.inference_mode():
        back = [clicked]
        while back[-1].op in ELEMENTWISE and back[-1].inputs[0] >= 0:
            back.append(trace.stages[back[-1].inputs[0]])
        steps = [_step(trace, s, (channel, y, x)) for s in reversed(back)]
        at, current = (channel, y, x), clicked
        for _ in range(MAX_FOLLOWED):
            nxt = next((s for s in trace.stages[current.index + 1:] if current.index in s.inputs), None)
            if nxt is None or nxt.op not in FOLLOWED or nxt.block != current.block:
                break
            at = _into(nxt, at)
            if at is None:
                break
            steps.append(_step(trace, nxt, at))
            current = nxt
        block = _block_of(trace, clicked)
        if block is not None and block.switched and clicked.index == block.join[-1].index:
            steps.append({"op": "switched", "name": block.name, "at": [channel, y, x],
                          "value": float(block.output[channel, y, x])})
    return {"stage": stage, "name": clicked.name, "op": clicked.op, "at": [channel, y, x],
            "value": float(out[channel, y, x]), "steps": steps}


def _block_of(trace: Trace, stage: Stage) -> Block | None:
    return next((b for b in trace.blocks() if any(s.index == stage.index for s in b.join)), None)


def _into(stage: Stage, at: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Where a value at `at` of a stage's input lands in its output (the first window that holds it)."""
    c, y, x = at
    if stage.op in ELEMENTWISE:
        return at
    (kh, kw), (sh, sw), (ph, pw) = stage.settings["kernel"], stage.settings["stride"], stage.settings["padding"]
    _, oh, ow = stage.shape

    def first(v: int, k: int, s: int, p: int, n: int) -> int | None:
        o = max(0, -(-(v + p - k + 1) // s))  # the smallest o with o*s - p + k > v
        return o if o < n and o * s - p <= v else None

    oy, ox = first(y, kh, sh, ph, oh), first(x, kw, sw, pw, ow)
    return None if oy is None or ox is None else (c, oy, ox)


def _window(t: torch.Tensor, y0: int, x0: int, kh: int, kw: int, fill: float = 0.0) -> torch.Tensor:
    """t[..., y0:y0+kh, x0:x0+kw], with `fill` where the window reaches past the map (padding)."""
    h, w = t.shape[-2:]
    out = torch.full((*t.shape[:-2], kh, kw), fill, dtype=t.dtype)
    ys, xs = slice(max(0, y0), min(h, y0 + kh)), slice(max(0, x0), min(w, x0 + kw))
    out[..., ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = t[..., ys, xs]
    return out


def _rows(t: torch.Tensor) -> list:
    return t.double().tolist()


def _step(trace: Trace, s: Stage, at: tuple[int, int, int]) -> dict[str, Any]:
    c, y, x = at
    value = float(s.output[c, y, x])
    step: dict[str, Any] = {"op": s.op, "stage": s.index, "name": s.name, "at": [c, y, x], "value": value,
                            "inputs": [trace.stages[i].name if i >= 0 else "input" for i in s.inputs]}
    given = s.given[0] if s.given else None
    module = _module(trace.model, s.module)
    if s.op == "conv" and given is not None and isinstance(module, nn.Conv2d) and module.groups == 1:
        (kh, kw), (sh, sw), (ph, pw) = s.settings["kernel"], s.settings["stride"], s.settings["padding"]
        dh, dw = s.settings.get("dilation", (1, 1))
        y0, x0 = y * sh - ph, x * sw - pw
        window = _window(given.float(), y0, x0, dh * (kh - 1) + 1, dw * (kw - 1) + 1)[..., ::dh, ::dw]
        kernel = module.weight[c].detach().float()
        products = window.double() * kernel.double()
        bias = None if module.bias is None else float(module.bias[c])
        total = float(products.sum())
        cin = kernel.shape[0]
        step.update({
            "window": _rows(window), "kernel": _rows(kernel), "origin": [y0, x0],
            "by_channel": products.sum(dim=(1, 2)).tolist(), "sum": total, "bias": bias,
            "computed": total + (bias or 0.0),
            "macs": {"value": cin * kh * kw, "map": cin * kh * kw * s.shape[1] * s.shape[2],
                     "value_5x5": cin * 25, "layer": cin * kh * kw * s.shape[0] * s.shape[1] * s.shape[2]},
        })
    elif s.op in ("maxpool", "avgpool") and given is not None:
        (kh, kw), (sh, sw), (ph, pw) = s.settings["kernel"], s.settings["stride"], s.settings["padding"]
        y0, x0 = y * sh - ph, x * sw - pw
        fill = float("-inf") if s.op == "maxpool" else 0.0
        window = _window(given[c].float(), y0, x0, kh, kw, fill)
        step.update({"window": [[None if v == float("-inf") else v for v in row] for row in _rows(window)],
                     "origin": [y0, x0]})
        if s.op == "maxpool":
            k = int(torch.argmax(window))
            step.update({"picked": [k // kw, k % kw], "computed": float(window.max())})
        else:
            step["computed"] = float(window.sum()) / (kh * kw)  # PyTorch's default counts the padding in the mean
    elif s.op == "relu" and given is not None:
        v = float(given[c, y, x])
        step.update({"input": v, "computed": max(0.0, v)})
    elif s.op == "bn" and given is not None and isinstance(module, nn.BatchNorm2d):
        v = float(given[c, y, x])
        mean, var = float(module.running_mean[c]), float(module.running_var[c])
        gamma = float(module.weight[c]) if module.weight is not None else 1.0
        beta = float(module.bias[c]) if module.bias is not None else 0.0
        step.update({"input": v, "mean": mean, "var": var, "eps": module.eps, "gamma": gamma, "beta": beta,
                     "computed": gamma * (v - mean) / (var + module.eps) ** 0.5 + beta})
    elif s.op == "sum" and len(s.given) == 2:
        a, b = float(s.given[0][c, y, x]), float(s.given[1][c, y, x])
        step.update({"terms": [a, b], "computed": a + b})
    elif s.op == "concat" and s.given:
        start = 0
        for k, t in enumerate(s.given):
            if c < start + t.shape[0]:
                block = _block_of(trace, s)
                branch = block.branches[k].name if block is not None and k < len(block.branches) else str(k)
                step.update({"branch": branch, "channel": c - start, "source": s.inputs[k],
                             "computed": float(t[c - start, y, x])})
                break
            start += t.shape[0]
    return step


def _module(model: nn.Module, name: str) -> nn.Module | None:
    return dict(model.named_modules()).get(name) if name else None


__all__ = ["NoSuchValue", "explain_value", "INPUT"]
