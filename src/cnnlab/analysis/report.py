"""The lecture's claims, measured: each analysis as a Markdown section with its figures, and the report
that puts them together (`cnnlab report`). The `cnnlab analyze ...` commands print the same sections."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import torch

from cnnlab.analysis import branches as br
from cnnlab.analysis import depth as dp
from cnnlab.analysis.cost import cost_rows, inception_reduction_costs, lecture_1x1_example
from cnnlab.atomic import atomic_writer
from cnnlab.data import ImageSet
from cnnlab.models import branched_blocks, create_model, get_model, lecture_models, list_models
from cnnlab.tables import format_table
from cnnlab.runs.rundir import write_json


def _fig(out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / name


# ---- 1. cost -----------------------------------------------------------------------------------------


# The networks the cost section counts unless told which: the lecture's and those in its spirit. The reading list's
# families (eleven deep residual networks, DenseNet) have their own studies (cnnlab study) and would bury these.
COUNTED_FAMILIES = ("lecture", "stronger", "designed")


def cost_section(out_dir: Path, models: list[str] | None = None) -> str:
    models = models or [m for m in list_models() if get_model(m).family in COUNTED_FAMILIES]
    per_model = {m: cost_rows(create_model(m)) for m in models}
    lecture = lecture_1x1_example()
    blocks = inception_reduction_costs()
    _plot_cost(per_model, lecture, blocks, _fig(out_dir, "cost.png"))

    tables = []
    for m, rows in per_model.items():
        body = [[r.name, r.kind, f"{r.parameters:,}", f"{r.macs:,}", f"{r.flops:,}"] for r in rows]
        tables.append(f"`{m}`:\n\n" + format_table(["part", "kind", "parameters", "multiply-adds", "FLOPs"], body, markdown=True))
    bl = [[str(b["in_channels"]), f"{b['size']}x{b['size']}", b["variant"], str(b["out_channels"]), f"{b['parameters']:,}", f"{b['macs']:,}"]
          for b in blocks]
    per_model_tables = "\n\n".join(tables)  # a blank line ends a Markdown table; without it the next label joins it
    ratio = lecture["direct"] / lecture["with_1x1"]
    per_case = {}
    for b in blocks:
        per_case.setdefault((b["in_channels"], b["size"]), {})[b["variant"]] = b["macs"]
    verdicts = []
    for (c, s), v in per_case.items():
        r = v["without"] / v["with 1x1 reductions"]
        where = f"{c} input channels at {s}x{s}"
        verdicts.append(f"{where}: the reductions cut the block's multiply-adds {r:.2f}x" if r > 1
                        else f"{where}: the reductions add work ({1 / r:.2f}x the multiply-adds)")
    return f"""## 1. A 1x1 convolution before a large kernel cuts computation

Counted by `torch.utils.flop_counter` on real `nn.Conv2d` layers, one image, forward pass (a multiply-add is
2 FLOPs; bias additions not counted).

The lecture's example, 192 channels of 28x28 to 32 channels with a 5x5 kernel: **{lecture['direct']:,}**
multiplications directly, **{lecture['with_1x1']:,}** through a 16-channel 1x1 convolution first
({ratio:.1f}x fewer), exactly the lecture's figures.

The lecture's Inception block with and without its 1x1 reductions (the convolutions before the 5x5 and the
first 3x3 taken out, every branch keeping its output channels), where `inception_net` uses it and where
GoogLeNet does:

{format_table(["in channels", "size", "variant", "out channels", "parameters", "multiply-adds"], bl, markdown=True)}

{chr(10).join('- ' + v for v in verdicts)}.

A reduction only saves when it reduces: in `inception_net` the first block gets 10 channels and its "reductions"
widen them to 16, so there they add work; with GoogLeNet's 192 input channels they cut it several-fold.

![cost](cost.png)

Per part of each network:

{per_model_tables}
"""


def _plot_cost(per_model, lecture, blocks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    labels, values = [], []
    for m, rows in per_model.items():
        for r in rows:
            if r.kind in ("block", "layer"):
                labels.append(f"{m}: {r.name}")
                values.append(r.macs / 1e6)
    ax.barh(range(len(values)), values, color="#4a78c2")
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("multiply-adds per image, forward (millions)")
    ax.set_title("Where each network's computation is")
    ax = axes[1]
    names = ["lecture example\n192->32, 5x5, 28x28"]
    direct = [lecture["direct"]]
    reduced = [lecture["with_1x1"]]
    cases = {}
    for b in blocks:
        cases.setdefault((b["in_channels"], b["size"]), {})[b["variant"]] = b["macs"]
    for (c, s), v in cases.items():
        names.append(f"Inception block\n{c} ch, {s}x{s}")
        direct.append(v["without"])
        reduced.append(v["with 1x1 reductions"])
    pos = range(len(names))
    ax.bar([p - 0.2 for p in pos], direct, width=0.4, label="without 1x1 reductions", color="#d9822b")
    ax.bar([p + 0.2 for p in pos], reduced, width=0.4, label="with 1x1 reductions", color="#4a78c2")
    ax.set_xticks(list(pos), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("multiply-adds per image (log scale)")
    ax.set_title("The 1x1 claim, on real layers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from cnnlab.plotting import save_figure  # matplotlib is imported only where a figure is made

    save_figure(fig, path)
    plt.close(fig)


# ---- 2. branches --------------------------------------------------------------------------------------


def branches_section(checkpoints: list[str], data: ImageSet, out_dir: Path, device: str = "auto",
                     progress: bool = True) -> str:
    from tqdm.auto import tqdm

    with tqdm(total=len(checkpoints) * len(data.test_labels), desc="branches", unit="img", unit_scale=True,
              disable=None if progress else True, dynamic_ncols=True) as bar:  # None: on a terminal only
        reports = [br.analyze_checkpoint(c, data, device, bar.update) for c in checkpoints]
    summary = br.summarise(reports)
    model = reports[0].model  # summarise has checked that every checkpoint is of this one model
    br.plot_branches(summary, _fig(out_dir, "branches.png"), f"Inception branches of {model} ({len(reports)} trained models)")
    fmt = lambda v, pct=True: "-" if v is None else (  # noqa: E731
        f"{100 * v[0]:.2f}%" + (f" ({100 * v[1]:.2f}..{100 * v[2]:.2f})" if len(reports) > 1 else ""))
    rows = [[e["block"], e["branch"], fmt(e["acc_without"]), fmt(e["acc_only"]), fmt(e["energy_share"]), fmt(e["grad_share"])]
            for e in summary]
    accs = ", ".join(f"{100 * r.accuracy:.2f}%" for r in reports)
    return f"""## 2. Which Inception branches does training lean on?

The notes ask it: "the teacher's Inception code never shows which branches were selected". Measured on
{len(reports)} trained `{model}` model(s) (test accuracy {accs}), on the {len(data.test_labels):,} {data.title} test images: accuracy
with one branch's output zeroed, accuracy with only that branch kept, the branch's share of its block's output
energy, and its share of the block's squared gradient norm over training (recorded by hooks during training).
Mean over the models, with min..max in brackets when there are several.

{format_table(["block", "branch", "acc, branch zeroed", "acc, only this branch", "output energy", "gradient (training)"], rows, markdown=True)}

{br.answer(reports, summary)}

![branches](branches.png)
"""


# ---- 3 and 4. depth -----------------------------------------------------------------------------------


def depth_section(data: ImageSet, out_dir: Path, depths=(2, 4, 8, 16, 32), progress: bool = True, **kw) -> str:
    t0 = time.perf_counter()
    results = dp.sweep(data, depths, progress=progress, **kw)
    seconds = time.perf_counter() - t0
    settings = {"steps": 200, "batch_size": 64, "lr": 0.05, "width": 16, "batch_norm": False, **kw}
    note = f"width {settings['width']}, {settings['steps']} steps" + (", batch norm" if settings["batch_norm"] else ", no batch norm")
    dp.plot_depth(results, _fig(out_dir, "depth_gradients.png"), _fig(out_dir, "depth_training.png"), note)
    write_json(out_dir / "depth.json", [r.__dict__ for r in results])
    rows = []
    for d in depths:
        p, r = (next(x for x in results if x.depth == d and x.residual == res) for res in (False, True))
        rows.append([str(d), f"{p.grad_init[0]:.2e}", f"{r.grad_init[0]:.2e}", f"{p.grad_early[0]:.2e}", f"{r.grad_early[0]:.2e}",
                     f"{p.train_loss:.3f}", f"{r.train_loss:.3f}", f"{100 * p.train_acc:.1f}%", f"{100 * r.train_acc:.1f}%"])
    deepest = max(depths)
    p32, r32 = (next(x for x in results if x.depth == deepest and x.residual == res) for res in (False, True))
    shallow = min(depths)
    p2 = next(x for x in results if x.depth == shallow and not x.residual)
    return f"""## 3 and 4. Deeper plain stacks train worse; the skip keeps the gradient alive

Plain and residual stacks of width {settings['width']} (a stride-2 3x3 stem, then `depth` 3x3 conv layers in blocks of
two, with or without the lecture's skip, then a linear layer on the flattened 14x14 map; {'batch norm' if settings['batch_norm'] else 'no batch norm'};
PyTorch's default initialisation), trained for {settings['steps']} SGD steps (batch {settings['batch_size']}, lr {settings['lr']},
momentum 0.9) on real {data.title} training images, the same batches for every network. Weight-gradient norms come from
hooks on the parameters: on the first batch (at initialisation) and the root mean square over the first 20 steps.
Training accuracy is measured after training on 5,000 training images. The sweep took {seconds:.0f} s.
PyTorch's default initialisation scales each layer so that the signal shrinks a little at every layer; without a
skip that compounds with depth. (`cnnlab analyze depth --batch-norm` runs the same sweep with batch norm.)

{format_table(["depth", "stem grad, plain", "stem grad, residual", "first 20 steps, plain", "first 20 steps, residual", "loss, plain", "loss, residual", "train acc, plain", "train acc, residual"], rows, markdown=True)}

At depth {deepest} the gradient that reaches the first layer at initialisation is {p32.grad_init[0]:.1e} in the plain stack and
{r32.grad_init[0]:.1e} in the residual one ({r32.grad_init[0] / max(p32.grad_init[0], 1e-30):.1e} times larger); after {settings['steps']} steps the plain stack
trains to {100 * p32.train_acc:.1f}% and the residual one to {100 * r32.train_acc:.1f}% (depth {shallow}, plain: {100 * p2.train_acc:.1f}%).

![gradient per layer](depth_gradients.png)

![training against depth](depth_training.png)
"""


# ---- the model comparison, and the whole report --------------------------------------------------------


def compare_section(run_dirs: list[str], out_dir: Path) -> str:
    from cnnlab.analysis.compare import COMPARE_HEADERS, compare_rows, plot_compare
    from cnnlab.runs import load_run

    runs = [load_run(d) for d in run_dirs]
    plot_compare(runs, _fig(out_dir, "compare.png"))
    return f"""## The networks compared

{format_table(COMPARE_HEADERS, compare_rows(runs), markdown=True)}

![compare](compare.png)
"""


class Stages:
    """The report's stages, each with the seconds it is expected to take, told as each starts: "report: <what>
    (k of n; about M left)". A training's expectation is its budget plus what the trainings before it took beyond
    theirs; the analyses' come from `probe_rates`. Once a stage ends, its measured time replaces its expectation."""

    def __init__(self, log: Callable[[str], object], clock: Callable[[], float] = time.perf_counter) -> None:
        self.log, self.clock = log, clock
        self.planned: list[tuple[str, Callable[[], float]]] = []  # (what, expected seconds when asked)
        self.took: list[float] = []
        self.t0 = clock()
        self.first_estimate: float | None = None

    def add(self, what: str, expect: Callable[[], float]) -> None:
        self.planned.append((what, expect))

    def left(self) -> float:
        return sum(expect() for _, expect in self.planned[len(self.took):])

    @contextlib.contextmanager
    def stage(self):
        k = len(self.took)
        left = self.left()
        if self.first_estimate is None:
            self.first_estimate = left
        self.log(f"report: {self.planned[k][0]} ({k + 1} of {len(self.planned)}; about {_duration(left)} left)")
        t = self.clock()
        yield
        self.took.append(self.clock() - t)

    def summary(self) -> str:
        return (f"report: done in {_duration(self.clock() - self.t0)} (expected at the start: "
                f"{_duration(self.first_estimate or 0.0)})")


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def probe_rates(data: ImageSet, device: torch.device, **depth_kw) -> tuple[float, float]:
    """(seconds per image of an inception_net forward pass, seconds per unit of depth-sweep work), measured on this
    machine in about a second: a forward of 1,000 test images, and a short depth-8 run after one that warms up."""
    from cnnlab.runs.forward import predict_logits
    from cnnlab.train import make_config

    images = data.test_images[:1000].to(device)
    cfg = make_config("inception_net", dataset=data.name)
    model = create_model("inception_net", num_classes=len(data.classes)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    predict_logits(model, images[:100], cfg)
    t = time.perf_counter()
    predict_logits(model, images, cfg)
    forward = (time.perf_counter() - t) / len(images)
    kw = {k: v for k, v in depth_kw.items() if k in ("width", "batch_norm", "batch_size")}
    dp.run_one(8, False, data, steps=3, device=device, **kw)
    t = time.perf_counter()
    dp.run_one(8, False, data, steps=10, device=device, **kw)
    unit = (time.perf_counter() - t) / dp.work(8, steps=10, probe=dp.probe_size(data), **kw)
    return forward, unit


def _check_given(runs: list[str], checkpoints: list[str]) -> None:
    """Read every run and checkpoint given before anything is trained: a wrong path, a damaged file or a network
    without Inception blocks is one line now, not after minutes of training."""
    from cnnlab.runs import load_run

    for run_dir in runs:
        load_run(run_dir)
    for checkpoint in checkpoints:
        br.load_analysable(checkpoint, "cpu")


def make_report(out_dir: Path, data: ImageSet, runs: list[str] | None = None, checkpoints: list[str] | None = None,
                seeds: int = 3, budget: float = 60.0, depths=(2, 4, 8, 16, 32), log=print, device: str = "auto",
                **depth_kw) -> Path:
    """Every analysis into out_dir/README.md. Without `checkpoints`, trains `seeds` inception_net models for
    `budget` seconds each with branch gradients recorded; without `runs`, compares those with a basic_cnn
    and a resnet trained for the same budget (run directories under out_dir/runs). Each stage is told as it
    starts, with the time the report expects still to take (`Stages`)."""
    from cnnlab.device import resolve_device
    from cnnlab.runs import load_run
    from cnnlab.sysinfo import describe_machine
    from cnnlab.config import make_spec
    from cnnlab.data import lookup
    from cnnlab.train import fit

    runs, checkpoints = list(runs or []), list(checkpoints or [])
    _check_given(runs, checkpoints)
    dataset = lookup(data.name)
    dev = resolve_device(device)
    forward, unit = probe_rates(data, dev, **depth_kw)
    stages = Stages(log)
    over: list[float] = []  # what each training took beyond its budget

    def training(model: str, **settings) -> Callable[[], str]:
        def train() -> str:
            t = time.perf_counter()
            spec = make_spec(model, dataset=dataset, time_budget=budget, device=device, **settings)
            run_dir = str(fit(spec, data, out_root=out_dir / "runs").run_dir)
            over.append(time.perf_counter() - t - budget)
            return run_dir

        return train

    jobs: list[tuple[str, Callable[[], str]]] = []
    if not checkpoints:
        jobs += [(f"training inception_net seed {seed} for {budget:g} s (branch gradients recorded)",
                  training("inception_net", seed=seed, record_branch_grads=True)) for seed in range(seeds)]
    # inception_net is compared through the first analysed run, unless that is a checkpoint file rather than a run
    first_is_run = Path(checkpoints[0]).is_dir() if checkpoints else True
    compared = [] if runs else [m for m in lecture_models() if m != "inception_net" or not first_is_run]
    jobs += [(f"training {model} for {budget:g} s", training(model)) for model in compared]
    for what, _ in jobs:
        stages.add(what, lambda: budget + (sum(over) / len(over) if over else 0.0))  # a budget run ends within it
    analysed = len(checkpoints) or seeds
    blocks = branched_blocks(create_model("inception_net", num_classes=len(data.classes)))
    silenced = 2 * sum(len(b.branch_names) for b in blocks.values())  # each branch zeroed, and kept alone
    stages.add("cost", lambda: 3.0)
    # A silenced forward runs only what follows its block: about a third of inception_net on average (its second
    # block is followed by the classifier alone). Three checkpoints took 16 s where half the network predicted 32.
    stages.add("branches", lambda: analysed * len(data.test_labels) * (1 + silenced / 3) * forward)
    stages.add("depth", lambda: 2 * sum(dp.work(d, probe=dp.probe_size(data), **depth_kw) for d in depths) * unit)
    stages.add("the comparison", lambda: 2.0)

    trained = []
    for _, job in jobs:
        with stages.stage():
            trained.append(job())
    if not checkpoints:
        checkpoints, trained = trained[:seeds], trained[seeds:]
    if not runs:
        runs = ([checkpoints[0]] if first_is_run else []) + trained
    with stages.stage():
        sections = [cost_section(out_dir)]
    with stages.stage():
        sections.append(branches_section(checkpoints, data, out_dir, device))
    with stages.stage():
        sections.append(depth_section(data, out_dir, tuple(depths), progress=True, device=dev, **depth_kw))
    with stages.stage():
        sections.append(compare_section(runs, out_dir))
    log(stages.summary())

    def how(run_dir: str) -> str:
        c = load_run(run_dir).config
        length = f"--time-budget {c['time_budget']:g} s" if c.get("time_budget") else f"{c['epochs']} epochs"
        return f"`{c['model']}` seed {c['seed']} ({c['recipe']} recipe, {length})"

    analysed_dirs = [d for d in checkpoints if Path(d).is_dir()]
    header = (
        "# The lecture's claims, measured\n\n"
        f"Made by `cnnlab report` on {time.strftime('%Y-%m-%d')}; machine: {describe_machine()}.  \n"
        f"Data: {data.title} ({len(data.train_labels):,} training and {len(data.test_labels):,} test images, {data.source}).  \n"
        f"Models compared: {', '.join(how(d) for d in runs)}.  \n"
        + (f"Models whose branches are analysed: {', '.join(how(d) for d in analysed_dirs)}." if analysed_dirs else "")
    )
    return write_report(out_dir, sections, header)


def write_report(out_dir: Path, sections: list[str], header: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "README.md"
    with atomic_writer(path, "w") as f:
        f.write(header + "\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    return path
