"""cnnlab models: the registered models with their parameters and FLOPs."""

from __future__ import annotations

import argparse

HELP = "list the registered models with parameters and FLOPs"
EPILOG = "example:\n  cnnlab models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments: every registered model is listed."""


def run(args: argparse.Namespace) -> int:
    from cnnlab.analysis.cost import forward_flops
    from cnnlab.models import count_parameters, create_model, list_models
    from cnnlab.tables import format_table

    rows = []
    for name in list_models():
        m = create_model(name)
        flops = forward_flops(m)
        rows.append([name, f"{count_parameters(m):,}", f"{flops:,}", f"{flops // 2:,}"])
    print(format_table(["model", "parameters", "FLOPs/image", "multiply-adds/image"], rows))
    print("\nFLOPs of one forward pass on a 1x28x28 image (torch.utils.flop_counter: convolutions and linear layers;")
    print("a multiply-add counts as 2 FLOPs).")
    return 0
