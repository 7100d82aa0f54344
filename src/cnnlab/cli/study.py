"""cnnlab study: a paper of the lecture's reading list reproduced, its runs resumable, its table beside the paper's."""

from __future__ import annotations

import argparse
import functools
import shlex
from pathlib import Path

from cnnlab.cli.args import in_range

HELP = "reproduce a paper of the reading list: identity-mappings (residual units) or densenet (DenseNet-BC)"
EPILOG = ("examples:\n"
          "  cnnlab study identity-mappings                 # 11 residual units x 2 data sets x 3 seeds (about 50 min)\n"
          "  cnnlab study densenet                          # DenseNet-BC beside the residual family at equal time\n"
          "  cnnlab study identity-mappings --small         # a one-minute version, to see what it does\n"
          "  cnnlab study identity-mappings --variants original preact --datasets mnist\n"
          "Stopped (Ctrl-C), the same command continues where it was: finished runs are kept in --out.")

STUDIES = ("identity-mappings", "densenet")
# The full studies' scale, chosen by measuring on a 2-core CPU (docs/studies.md says why): depth 56 is where the
# paper's multiplicative shortcuts already train clearly worse, and 400 steps (0.9 epoch) is where the runs separate.
DEPTH, WIDTH, STEPS, BUDGET = 56, 16, 400, 60.0
SMALL = dict(depth=8, width=4, steps=30, seeds=1, datasets=["mnist"], budget=2.0,
             densenet="depth=10,growth=4,compression=0.5")
DENSENET = "depth=22,growth=8,compression=0.5"  # 32,318 parameters; 745 images/s on 2 cores (resnet_bn: 1,746)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.config import Range
    from cnnlab.data import entries
    from cnnlab.models.resunits import DEPTHS, WIDTHS
    from cnnlab.studies.identity import ORDER

    p.add_argument("study", choices=STUDIES, help="which paper")
    p.add_argument("--out", help="study directory, continued when it holds a stopped study (default: studies/STUDY)")
    p.add_argument("--seeds", type=in_range(Range(1, 20, whole=True)), default=None, help="seeds 0..N-1 (default: 3)")
    named = [e.name for e in entries() if not e.takes_path]
    p.add_argument("--datasets", nargs="+", choices=named, default=None,
                   help="data sets (default: mnist fashion-mnist)")
    p.add_argument("--depth", type=in_range(Range(*DEPTHS, whole=True)), default=None,
                   help=f"residual networks' depth, 6n + 2 (default: {DEPTH})")
    p.add_argument("--width", type=in_range(Range(*WIDTHS, whole=True)), default=None,
                   help=f"residual networks' first width (default: {WIDTH})")
    p.add_argument("--steps", type=in_range(Range(1, 10**6, whole=True)), default=None,
                   help=f"identity-mappings: steps of 128 images per run (default: {STEPS})")
    p.add_argument("--variants", nargs="+", choices=ORDER, default=None,
                   help="identity-mappings: the units to train (default: all)")
    p.add_argument("--budget", type=in_range(Range(0, 10**5, above=True)), default=None,
                   help=f"densenet: training seconds per run, the same for every network (default: {BUDGET:g})")
    p.add_argument("--densenet", default=None, metavar="SPEC",
                   help=f"densenet: DenseNet-BC's design (default: {DENSENET})")
    p.add_argument("--small", action="store_true",
                   help=f"a small version: depth {SMALL['depth']}, width {SMALL['width']}, {SMALL['steps']} steps, "
                        f"one seed, MNIST (default: off)")


def _settings(args: argparse.Namespace) -> dict:
    base = dict(SMALL) if args.small else dict(depth=DEPTH, width=WIDTH, steps=STEPS, seeds=3,
                                                datasets=["mnist", "fashion-mnist"], budget=BUDGET, densenet=DENSENET)
    given = {k: getattr(args, k) for k in base if getattr(args, k) is not None}
    return {**base, **given}


def _command(args: argparse.Namespace, s: dict) -> str:
    """The command that makes this study, every setting spelled out."""
    words = ["cnnlab", "study", args.study, "--seeds", str(s["seeds"]), "--datasets", *s["datasets"],
             "--depth", str(s["depth"]), "--width", str(s["width"])]
    if args.study == "identity-mappings":
        words += ["--steps", str(s["steps"])] + (["--variants", *args.variants] if args.variants else [])
    else:
        words += ["--budget", f"{s['budget']:g}", "--densenet", s["densenet"]]
    return " ".join(shlex.quote(w) for w in words)


def _advice(out: Path, e: BaseException) -> list[str]:
    if isinstance(e, KeyboardInterrupt):
        return [f"the finished runs are kept in {out}; the same command continues the study"]
    return []


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli import answered

    out = Path(args.out or f"studies/{args.study}")
    return answered(args.command, functools.partial(_run, out=out), args, advice=functools.partial(_advice, out))


def _run(args: argparse.Namespace, out: Path) -> int:
    from cnnlab.atomic import atomic_writer
    from cnnlab.data.sets.registry import lookup
    from cnnlab.models import get_model
    from cnnlab.studies import densenet, identity
    from cnnlab.sysinfo import cpu_kind

    s = _settings(args)
    titles = {d: lookup(d).title for d in s["datasets"]}
    seeds = list(range(s["seeds"]))
    command = _command(args, s)
    if args.study == "identity-mappings":
        st = identity.study(out, s["depth"], s["width"], s["steps"], seeds, s["datasets"], args.variants or identity.ORDER)
    else:
        block = get_model("densenet_bc").check_block(s["densenet"])
        family = f"depth={s['depth']},width={s['width']}"
        st = densenet.study(out, s["budget"], seeds, s["datasets"],
                            [("densenet_bc", block), ("res_preact", family), ("res_original", family)])
    print(f"{args.study}: {len(st.jobs)} runs into {out}" +
          (f" ({sum(1 for j in st.jobs if st.result_path(j).exists())} finished before)" if (out / "plan.json").exists() else ""),
          flush=True)
    st.run()
    import torch

    machine = f"{cpu_kind()}, {torch.get_num_threads()} threads"
    if args.study == "identity-mappings":
        identity.plot(st, titles, out)
        text = identity.markdown(st, titles, machine, command)
    else:
        text = densenet.markdown(st, titles, machine, command)
    with atomic_writer(out / "README.md", "w") as f:
        f.write(text)
    s_ = st.settings
    print(identity.table(st.outcomes(), s_["datasets"], s_["variants"], titles) if args.study == "identity-mappings"
          else densenet.table(st, titles))
    print(f"\n{args.study}: {out / 'README.md'}")
    return 0
