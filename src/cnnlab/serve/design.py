"""What a block design costs, for the page's designer: POST /api/design, and the design of a training order.

    POST /api/design  {"design": "inception:1x1=16,5x5=4>24,pool=24"} ->
        {"design": its canonical spec, "model": "designed", "kind": "inception",
         "parameters": N, "macs": M,                                   the whole network, one 1 x 28 x 28 image
         "per_block": [{"name": "incep1", "parameters", "macs"}, ...],
         "per_branch": [{"name": "incep1.5x5", "block": "incep1", "branch": "5x5", "parameters", "macs"}, ...],
         "lecture": {"model": "inception_net", "design": the lecture's block as a spec, the same figures}}

The figures are counted on the network built from the design (models/designed.py), as a training from the page
builds it for MNIST (1 x 28 x 28, 10 classes): parameters by `count_parameters`, multiply-adds by PyTorch's FLOP
counter on one forward (cnnlab.models.cost, which the analysis's cost tables read too, and which other threads
running models meanwhile cannot disturb; a multiply-add is two of its FLOPs; pooling, ReLU and sums are not
counted). A residual design has no branches: its per_branch
is empty, its per_block says what each block costs.

A design that cannot be built is a 422 with {"error", "code", "params"}: the codes of models/designed.DesignError,
declared among the server's (serve/inputs.ERROR_CODES).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from cnnlab.models import BranchedBlock, ModelSpec, SkipBlock, count_parameters, create_model
from cnnlab.models.cost import module_flops
from cnnlab.models.designed import LECTURE, LECTURE_MODELS, MAX_SPEC, Design, DesignError, PlainBlock, designed
from cnnlab.serve.inputs import RequestError, text_field

MODEL = designed.__name__  # the registered network a design is trained as
MNIST = {"in_channels": 1, "num_classes": 10, "image_size": 28}  # what the page trains on (MNIST, Fashion-MNIST)


def refused(e: DesignError) -> RequestError:
    """The 422 of a design that cannot be built, with its code and parameters."""
    return RequestError(422, str(e), e.code, **e.params)


def design_cost(doc: dict[str, Any]) -> dict[str, Any]:
    """The answer to POST /api/design (see the module's docstring); a RequestError for a design it cannot build."""
    spec = text_field(doc, "design", required=True, limit=MAX_SPEC)
    try:
        design = Design.parse(spec)
    except DesignError as e:
        raise refused(e) from None
    return {"design": design.spec, "model": MODEL, "kind": design.kind, **_cost(design.spec),
            "lecture": _lecture(design.kind)}


def order_block(model: ModelSpec, doc: dict[str, Any]) -> str:
    """The block design of a training order `doc` for `model` (its field "block"), as its run will record it: a
    design's canonical spec, its default when none is given; "" for a model that takes none. A 422 for a design it
    cannot build or take."""
    block = text_field(doc, "block", limit=MAX_SPEC) or ""
    try:
        return model.check_block(block)
    except DesignError as e:
        raise refused(e) from None
    except ValueError as e:  # a design for a model that takes none, or a family's depth and width it cannot take
        if model.design is None:
            raise RequestError(422, str(e), "design.not_taken", model=model.name) from None
        raise RequestError(422, str(e), "design.family", model=model.name, default=model.check_block("")) from None


@functools.lru_cache(maxsize=256)  # the page asks again for designs it had (a width moved back and forth)
def _cost(spec: str) -> dict[str, Any]:
    return _figures(create_model(MODEL, block=spec, **MNIST))


@functools.cache
def _lecture(kind: str) -> dict[str, Any]:
    name = LECTURE_MODELS[kind]
    return {"model": name, "design": LECTURE[kind], **_figures(create_model(name, **MNIST))}


def _figures(model: nn.Module) -> dict[str, Any]:
    """Parameters and multiply-adds of `model`, of each top-level block and of each branch of an Inception block."""
    macs = _macs(model)
    per_block, per_branch = [], []
    for name, block in model.named_children():
        if not isinstance(block, (BranchedBlock, SkipBlock, PlainBlock)):
            continue
        per_block.append({"name": name, "parameters": count_parameters(block), "macs": macs.get(name, 0)})
        if isinstance(block, BranchedBlock):
            for branch, members in block.branch_modules.items():
                per_branch.append({
                    "name": f"{name}.{branch}", "block": name, "branch": branch,
                    "parameters": sum(p.numel() for p in block.branch_parameters(branch)),
                    "macs": sum(macs.get(f"{name}.{m}", 0) for m in members),
                })
    return {"parameters": count_parameters(model), "macs": macs.get("", 0), "per_block": per_block,
            "per_branch": per_branch}


def _macs(model: nn.Module) -> dict[str, int]:
    """Multiply-adds of one MNIST image's forward, by dotted module name ('' for the whole model)."""
    return {name: flops // 2 for name, flops in module_flops(model, MNIST["in_channels"], MNIST["image_size"]).items()}
