"""cnnlab models: the registered models, by family, with their parameters and FLOPs."""

from __future__ import annotations

import argparse

HELP = "list the registered models with parameters and FLOPs"
EPILOG = "example:\n  cnnlab models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments: every registered model is listed."""


def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis.cost import forward_flops
    from cnnlab.models import count_parameters, create_model, get_model, list_models
    from cnnlab.models.registry import FAMILIES
    from cnnlab.tables import format_table

    for family, title in FAMILIES.items():
        rows = []
        for name in list_models():
            spec = get_model(name)
            if spec.family != family:
                continue
            m = create_model(name)
            flops = forward_flops(m)
            design = spec.check_block("") if spec.design is not None else ""
            rows.append([name, f"{count_parameters(m):,}", f"{flops:,}", f"{flops // 2:,}", design or "-"])
        if rows:
            print(f"{title}:")
            print(format_table(["model", "parameters", "FLOPs/image", "multiply-adds/image", "default design (--block)"],
                               rows))
            print()
    print("FLOPs of one forward pass on a 1x28x28 image (torch.utils.flop_counter: convolutions and linear layers;")
    print("a multiply-add counts as 2 FLOPs).")
    return 0
