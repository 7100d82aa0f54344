"""The study of "Densely Connected Convolutional Networks" on 28x28 data: DenseNet-BC beside the residual family's
full pre-activation and original units at equal training time, on each data set, from each seed.

Equal time, repeatably: before its first run the study times a few training steps of each network on this machine and
gives each as many steps as fit in the budget; the steps are written into the plan, so that a resumed study (or one
read on another machine) trains exactly those steps. The table states the measured seconds beside them. The recipe
is the identity-mappings study's (cnnlab's default with plain cross-entropy), so that the residual rows are that
study's networks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from cnnlab.models import create_model, get_model
from cnnlab.studies.identity import RECIPE
from cnnlab.studies.papers import DENSENET, DENSENET_CLAIM, DENSENET_ROWS
from cnnlab.studies.runner import Job, Study, by, compare, mean_sd, model_facts

NAME = "densenet"
CALIBRATION_STEPS = 8  # timed steps per network, after two untimed ones


def step_seconds(model: str, block: str, batch: int = 128) -> float:
    """Seconds of one training step of `model` on this machine (random pictures of MNIST's shape: only the time is
    wanted), the median of CALIBRATION_STEPS."""
    torch.manual_seed(0)
    net = create_model(model, block=block).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for k in range(CALIBRATION_STEPS + 2):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= 2:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def study(out: str | Path, budget: float, seeds: Sequence[int], datasets: Sequence[str],
          networks: Sequence[tuple[str, str]]) -> Study:
    """The study's jobs, each network trained for the steps that take `budget` seconds here (timed now, or read from
    the plan of a study begun in `out` with the same settings)."""
    blocks = [(m, get_model(m).check_block(b)) for m, b in networks]
    settings = {"budget_seconds": budget, "batch_size": 128, "seeds": list(seeds), "datasets": list(datasets),
                "networks": [list(n) for n in blocks], "recipe": RECIPE}
    plan = Path(out) / "plan.json"
    steps: dict[str, int] = {}
    if plan.exists():
        try:
            planned = json.loads(plan.read_text())
        except (OSError, ValueError):
            planned = {}
        if planned.get("settings") == json.loads(json.dumps(settings)):
            steps = {f"{j['model']}|{j['block']}": j["steps"] for j in planned.get("jobs", [])}
    for m, b in blocks:
        if f"{m}|{b}" not in steps:
            steps[f"{m}|{b}"] = max(1, round(budget / step_seconds(m, b)))
    jobs = [Job(d, m, b, s, steps[f"{m}|{b}"], dict(RECIPE)) for d in datasets for m, b in blocks for s in seeds]
    return Study(NAME, settings, jobs, out)


def _label(model: str, block: str) -> str:
    return f"`{model}` ({block})" if block else f"`{model}`"


def table(st: Study, titles: dict[str, str]) -> str:
    s = st.settings
    outcomes = st.outcomes()
    head = ["network", "parameters", "multiply-adds", "steps", "training seconds"] + \
        [f"{titles[d]} test error" for d in s["datasets"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, b in s["networks"]:
        params, macs = model_facts(m, b)
        rows = by(outcomes, model=m, block=b)
        steps = next((j.steps for j in st.jobs if j.model == m and j.block == b), 0)
        secs = [o.train_seconds for o in rows]
        cells = [_label(m, b), f"{params:,}", f"{macs:,}", f"{steps:,}",
                 f"{mean_sd(secs)[0]:.0f} ± {mean_sd(secs)[1]:.0f}" if secs else "-"]
        for d in s["datasets"]:
            errs = [o.test_error for o in by(rows, dataset=d) if o.test_error is not None]
            failed = len(by(rows, dataset=d)) - len(errs)
            m_, sd = mean_sd(errs) if errs else (0, 0)
            cells.append((f"{m_:.2f} ± {sd:.2f}%" if errs else "-") + (f" ({failed} diverged)" if failed else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(st: Study, titles: dict[str, str]) -> list[str]:
    """Whether DenseNet-BC matches or beats each residual network with fewer parameters, per data set."""
    s = st.settings
    outcomes = st.outcomes()
    dense = [(m, b) for m, b in s["networks"] if get_model(m).family == "densenet"]
    others = [(m, b) for m, b in s["networks"] if get_model(m).family != "densenet"]
    out = []
    for dm, db in dense:
        dp = model_facts(dm, db)[0]
        for om, ob in others:
            op = model_facts(om, ob)[0]
            for d in s["datasets"]:
                a = [o.test_error for o in by(outcomes, dataset=d, model=dm, block=db) if o.test_error is not None]
                b = [o.test_error for o in by(outcomes, dataset=d, model=om, block=ob) if o.test_error is not None]
                if not a or not b:
                    continue
                w = compare(a, b)
                agrees = "agrees" if w in ("same", "better") and dp < op else "does not agree"
                out.append(f"{titles[d]}: `{dm}` ({dp:,} parameters) against `{om}` ({op:,}): test error {w} "
                           f"({mean_sd(a)[0]:.2f}% against {mean_sd(b)[0]:.2f}%), {dp / op:.2f}x the parameters: "
                           f"{agrees} with the paper's claim.")
    return out


def markdown(st: Study, titles: dict[str, str], machine: str, command: str) -> str:
    s = st.settings
    paper = "\n".join(f"| {n} | {p} | {e}% |" for n, p, e in DENSENET_ROWS)
    found = "\n".join(f"- {line}" for line in verdict(st, titles))
    return f"""# DenseNet-BC beside the residual family at equal training time, on {' and '.join(titles.values())}

Reproduced with `{command}` on {machine}: {len(st.outcomes())} of {len(st.jobs)} runs.

Each network trains for the steps of 128 images that took {s['budget_seconds']:g} s on this machine when the study
began (timed over {CALIBRATION_STEPS} steps each; the measured seconds are in the table), seeds
{', '.join(map(str, s['seeds']))}; recipe: cnnlab's default with plain cross-entropy, as the identity-mappings
study's. Test error: the epoch chosen by validation accuracy; mean ±
standard deviation over the seeds.

{table(st, titles)}

The paper ({DENSENET}), Table 2, CIFAR-10 with augmentation (C10+):

| network | parameters | C10+ error |
|---|---|---|
{paper}

Its claim: {DENSENET_CLAIM}

What we found:

{found}
"""
