"""The study of "Identity Mappings in Deep Residual Networks" on 28x28 data: every residual unit of the family
(models/resunits.py) trained at one depth and width, on each data set, from each seed, for the same number of steps;
a Markdown table of our training loss and test error beside the paper's Table 1 and Table 2, a column saying whether
we agree, the training-loss curves by unit (the paper's Fig. 3 and Fig. 6), and the gradient's flow through the
units by variant (its Eq. 5).

The recipe is cnnlab's default (SGD with Nesterov momentum at a peak rate of 0.05, one-cycle schedule, the gradient
clipped to norm 2, augmentation, batch 128) with plain cross-entropy (no label smoothing), so that the training loss is
the paper's quantity. Not the paper's rate of 0.1 without clipping: measured at depth 56 on Fashion-MNIST, the original
unit's loss jumped from 0.83 to 3.9 at the peak of a 400-step run and ended at 0.85 (32% test error), the instability
the paper avoids with 400 steps of warm-up at 0.01, as long as our whole run. Clipping bounds each step; it does not
mend a unit's gradient flow, which is what the study compares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cnnlab.models.resunits import VARIANTS, canonical
from cnnlab.studies.papers import IDENTITY, IDENTITY_CLAIMS, IDENTITY_MAPPINGS
from cnnlab.studies.runner import Job, Outcome, Study, by, compare, mean_sd, model_facts

NAME = "identity-mappings"
RECIPE = {"label_smoothing": 0.0}
# The table's order: the shortcuts of Fig. 2, then the placements of Fig. 4, then the lecture's unit (no batch norm).
ORDER = ("original", "scaling", "gating", "shortcut_gating", "conv_shortcut", "dropout_shortcut",
         "bn_after_add", "relu_before_add", "relu_preact", "preact", "lecture")
BASELINE = "original"
CHANCE_ERROR = 90.0  # a diverged run's test error in a comparison: a guess among ten classes


def study(out: str | Path, depth: int, width: int, steps: int, seeds: Sequence[int], datasets: Sequence[str],
          variants: Sequence[str] = ORDER) -> Study:
    """The study's jobs: data set by data set, then variant, then seed (so a stop leaves whole rows behind it)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    block = canonical(f"depth={depth},width={width}")
    jobs = [Job(d, f"res_{v}", block, s, steps, dict(RECIPE)) for d in datasets for v in variants for s in seeds]
    settings = {"depth": depth, "width": width, "steps": steps, "batch_size": 128, "seeds": list(seeds),
                "datasets": list(datasets), "variants": list(variants), "recipe": RECIPE}
    return Study(NAME, settings, jobs, out)


def _errors(outcomes: list[Outcome]) -> list[float]:
    return [CHANCE_ERROR if o.test_error is None else o.test_error for o in outcomes]


def _fmt(values: Sequence[float], digits: int, suffix: str = "") -> str:
    if not values:
        return "-"
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}{suffix}"


def _cell(rows: list[Outcome], what: str) -> str:
    """A table cell: mean ± standard deviation over the seeds, and how many diverged."""
    done = [o for o in rows if o.diverged_at is None]
    failed = len(rows) - len(done)
    if what == "loss":
        text = _fmt([o.train_loss for o in done], 4)
    else:
        text = _fmt([o.test_error for o in done], 2, "%")
    return text + (f" ({failed} of {len(rows)} diverged)" if failed else "")


def verdicts(outcomes: list[Outcome], datasets: Sequence[str], variant: str) -> dict[str, str]:
    """Our verdict on `variant` against the original unit, per data set, on test error: "worse", "better" or "same"
    (the means within the two seeds' spreads). More diverged seeds than the original's is worse, whatever the
    others gave (a diverged run is counted at chance in the means)."""
    out = {}
    for d in datasets:
        ours, base = by(outcomes, dataset=d, model=f"res_{variant}"), by(outcomes, dataset=d, model=f"res_{BASELINE}")
        if ours and base:
            failed = sum(o.diverged_at is not None for o in ours) - sum(o.diverged_at is not None for o in base)
            out[d] = "worse" if failed > 0 else "better" if failed < 0 else compare(_errors(ours), _errors(base))
    return out


def agreement(paper: str, ours: dict[str, str]) -> str:
    """"yes" where every data set's verdict is the paper's, "no" where none is, "partly" between; "-" without one."""
    if not paper or not ours:
        return "-"
    hits = sum(v == paper for v in ours.values())
    return "yes" if hits == len(ours) else "no" if hits == 0 else "partly"


def table(outcomes: list[Outcome], datasets: Sequence[str], variants: Sequence[str], titles: dict[str, str]) -> str:
    """The Markdown table: each variant's unit, the paper's figure (table and row), ours per data set (training loss,
    test error: mean ± sd over seeds), our verdict against the original unit and whether it is the paper's."""
    head = ["unit", "paper (CIFAR-10 test error, ResNet-110)", "paper vs original"]
    for d in datasets:
        head += [f"{titles[d]} training loss", f"{titles[d]} test error"]
    head += ["ours vs original (test error)", "agrees?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        variant = VARIANTS[v]
        figures = IDENTITY[v]
        paper = "; ".join(f"{f.error}{'' if f.error == 'fail' else '%'} ({f.where}" +
                          (f", {f.network})" if f.network != "ResNet-110" else ")") for f in figures) or "not in the paper"
        said = figures[0].verdict if figures else ""
        row = [f"`res_{v}`: {variant.unit} ({variant.figure})", paper, said or ("baseline" if figures else "-")]
        for d in datasets:
            rows = by(outcomes, dataset=d, model=f"res_{v}")
            row += [_cell(rows, "loss"), _cell(rows, "error")]
        ours = verdicts(outcomes, datasets, v) if v != BASELINE else {}
        row += [", ".join(f"{titles[d]}: {w}" for d, w in ours.items()) or ("baseline" if v == BASELINE else "-"),
                agreement(said, ours) if v != "lecture" else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def findings(outcomes: list[Outcome], datasets: Sequence[str], variants: Sequence[str], titles: dict[str, str]) -> list[str]:
    """The paper's three claims, each with what we measured, in plain words."""
    out = []
    multiplicative = [v for v in ("scaling", "gating", "shortcut_gating", "conv_shortcut", "dropout_shortcut") if v in variants]
    for d in datasets:
        base = by(outcomes, dataset=d, model=f"res_{BASELINE}")
        if not base:
            continue
        worse_loss, worse_err = [], []
        for v in multiplicative:
            rows = by(outcomes, dataset=d, model=f"res_{v}")
            if not rows:
                continue
            losses = [o.train_loss if o.train_loss is not None else float("inf") for o in rows]
            if compare(losses, [o.train_loss for o in base if o.train_loss is not None] or [float("inf")]) == "worse":
                worse_loss.append(v)
            if compare(_errors(rows), _errors(base)) == "worse":
                worse_err.append(v)
        out.append(f"{titles[d]}: {len(worse_loss)} of {len(multiplicative)} modified shortcuts end at a clearly higher "
                   f"training loss than the identity ({', '.join(worse_loss) or 'none'}), {len(worse_err)} at a clearly "
                   f"higher test error ({', '.join(worse_err) or 'none'}).")
        after = by(outcomes, dataset=d, model="res_bn_after_add")
        if after:
            v = verdicts(outcomes, [d], "bn_after_add").get(d, "-")
            early, early_base = _early(after), _early(base)
            w = compare(early, early_base) if early and early_base else "-"
            out.append(f"{titles[d]}: BN after addition against the original unit: training loss over the first "
                       f"quarter of the run {w} ({mean_sd(early)[0]:.3f} against {mean_sd(early_base)[0]:.3f}), "
                       f"test error {v}.")
        means = {v: mean_sd(_errors(by(outcomes, dataset=d, model=f"res_{v}")))[0] for v in variants
                 if by(outcomes, dataset=d, model=f"res_{v}")}
        if "preact" in means:
            best = min(means, key=means.get)
            if best == "preact":
                out.append(f"{titles[d]}: full pre-activation has the lowest mean test error of all units "
                           f"({means['preact']:.2f}%), as the paper found.")
            else:
                out.append(f"{titles[d]}: the lowest mean test error is `res_{best}`'s ({means[best]:.2f}%); full "
                           f"pre-activation's is {means['preact']:.2f}%, not the lowest (the paper found it best).")
    return out


def _early(rows: list[Outcome]) -> list[float]:
    """Each run's mean training loss over the first quarter of its steps (the paper's Fig. 6 left: "difficulties on
    reducing training loss at the beginning of training")."""
    out = []
    for o in rows:
        if o.diverged_at is None and o.curve:
            first = [loss for step, loss in o.curve if step <= o.steps / 4]
            if first:
                out.append(sum(first) / len(first))
    return out


def markdown(st: Study, titles: dict[str, str], machine: str, command: str) -> str:
    """The study's page: how it was run, the table, the findings, the curves and the gradient flow."""
    s = st.settings
    outcomes = st.outcomes()
    params, macs = model_facts(f"res_{BASELINE}", canonical(f"depth={s['depth']},width={s['width']}"))
    n_units = 3 * ((s["depth"] - 2) // 6)
    done = len(outcomes)
    claims = "\n".join(f"- {c}" for c in IDENTITY_CLAIMS)
    found = "\n".join(f"- {f}" for f in findings(outcomes, s["datasets"], s["variants"], titles))
    return f"""# The residual units of "Identity Mappings in Deep Residual Networks", on {' and '.join(titles.values())}

Reproduced with `{command}` on {machine}: {done} of {len(st.jobs)} runs.

Every unit of the paper's Fig. 2 (shortcuts) and Fig. 4 (where batch norm and ReLU go), and the lecture's unit, in
one network: depth {s['depth']} ({n_units} residual units of two 3x3 convolutions; the paper's ResNet-110 has 54),
width {s['width']}, {2 * s['width']}, {4 * s['width']} on 14x14, 7x7 and 4x4 maps; the original unit's network has
{params:,} parameters and {macs:,} multiply-adds a picture. Each run trains {s['steps']} steps of 128 images
({s['steps'] * 128 / 55_000:.2f} epochs of the 55,000 training images), seeds {', '.join(map(str, s['seeds']))};
recipe: cnnlab's default (peak learning rate 0.05, gradient clipped to norm 2) with plain cross-entropy, the paper's
loss. Training loss: the mean of the last tenth of the run's logged losses (augmented batches, as the optimiser
saw them); test error: the epoch chosen by validation accuracy on 5,000 held-out training images. Mean ± standard
deviation over the seeds. "ours vs original": worse or better where the two means differ by more than the two
standard deviations together, else same. The paper's figures: {IDENTITY_MAPPINGS}, CIFAR-10 with augmentation, the
median of 5 runs, about 64,000 steps.

{table(outcomes, s['datasets'], s['variants'], titles)}

What the paper claims:

{claims}

What we found:

{found}

![training loss by unit](curves.png)

The gradient's flow (the paper's Eq. 5): the root mean square of the loss's gradient at each unit's input, over that
at the last unit's output, on the first 256 training images, at initialisation and after training (mean over seeds,
{titles[s['datasets'][0]]}). With an identity shortcut and nothing after the sum the gradient reaches the first unit
undiminished (1 on this scale); a factor on the shortcut multiplies it unit after unit.

![gradient by unit](gradients.png)
"""


GROUPS = (("shortcuts (Fig. 2)", ("original", "scaling", "gating", "shortcut_gating", "conv_shortcut", "dropout_shortcut")),
          ("BN and ReLU placement (Fig. 4)", ("original", "bn_after_add", "relu_before_add", "relu_preact", "preact", "lecture")))
# One colour per unit across every panel; the original unit black, the lecture's grey and dashed.
COLOURS = {"original": "black", "scaling": "#1f77b4", "gating": "#ff7f0e", "shortcut_gating": "#2ca02c",
           "conv_shortcut": "#d62728", "dropout_shortcut": "#9467bd", "bn_after_add": "#8c564b",
           "relu_before_add": "#e377c2", "relu_preact": "#17becf", "preact": "#bcbd22", "lecture": "grey"}


def _seeds(n: int) -> str:
    return f"mean of {n} seed{'s' if n != 1 else ''}"


def plot(st: Study, titles: dict[str, str], out_dir: Path) -> None:
    """curves.png (training loss against step by unit, the shortcuts and the placements apart, a row per data set, as
    the paper's Fig. 3 and Fig. 6) and gradients.png (the gradient's flow through the units by unit, at initialisation
    and after training)."""
    from matplotlib.figure import Figure

    from cnnlab.plotting import plain_log_ticks, save_figure

    s = st.settings
    outcomes = st.outcomes()

    def style(v: str) -> dict:
        return {"color": COLOURS[v], "lw": 1.8 if v in ("original", "preact") else 1.1, "ls": "--" if v == "lecture" else "-"}

    fig = Figure(figsize=(13, 4.2 * len(s["datasets"])))
    axes = fig.subplots(len(s["datasets"]), 2, squeeze=False)
    for r, d in enumerate(s["datasets"]):
        for c, (title, members) in enumerate(GROUPS):
            ax = axes[r][c]
            for v in members:
                rows = by(outcomes, dataset=d, model=f"res_{v}")
                if v not in s["variants"] or not rows:
                    continue
                steps = sorted({p[0] for o in rows for p in o.curve})
                mean = [sum(dict(o.curve).get(k, float("nan")) for o in rows) / len(rows) for k in steps]
                diverged = sum(o.diverged_at is not None for o in rows)
                ax.plot(steps, mean, label=f"res_{v}" + (f" ({diverged} diverged)" if diverged else ""), **style(v))
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
            ax.set_xlabel("step (128 images)")
            ax.set_ylabel("training loss (log scale)")
            ax.set_title(f"{titles[d]}: {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Training loss by residual unit, depth {s['depth']}, {_seeds(len(s['seeds']))}")
    fig.tight_layout()
    save_figure(fig, out_dir / "curves.png")

    d = s["datasets"][0]
    fig = Figure(figsize=(13, 8.4))
    axes = fig.subplots(2, 2, sharey=True)
    for r, when in enumerate(("grad_init", "grad_trained")):
        for c, (title, members) in enumerate(GROUPS):
            ax = axes[r][c]
            n = 0
            for v in members:
                rows = [o for o in by(outcomes, dataset=d, model=f"res_{v}") if getattr(o, when)]
                if v not in s["variants"] or not rows:
                    continue
                n = len(getattr(rows[0], when))
                mean = [sum(getattr(o, when)[k] for o in rows) / len(rows) for k in range(n)]
                ax.plot(range(1, n + 1), mean, marker=".", label=f"res_{v}", **style(v))
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
            if n:
                ax.set_xticks(range(1, n + 1, max(1, n // 10)))
            ax.set_xlabel(f"unit (1 = the first; {n} = the last unit's output)")
            ax.set_title(f"{title}, {'at initialisation' if when == 'grad_init' else 'after training'}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        axes[r][0].set_ylabel("gradient RMS at the unit's input / at the output")
    fig.suptitle(f"The gradient through the units ({titles[d]}, depth {s['depth']}, {_seeds(len(s['seeds']))})")
    fig.tight_layout()
    save_figure(fig, out_dir / "gradients.png")
