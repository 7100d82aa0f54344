"""Stability benchmark: does a training step that users can reach diverge, with and without gradient clipping?

    python benchmarks/stability.py                 # every case, 10 seeds, clipping off and on
    python benchmarks/stability.py --cases folder --seeds 0 1 2

Each case is a setting a user reaches from the README or a benchmark, trained for its first 1,000 steps (the
image folder: its whole run) with seeds 0..9, once with the gradient's norm clipped (the recipe's grad_clip) and
once without (grad_clip 0, as before clipping was the default). A run ends one of three ways: ok, *diverged* (the loss stopped
being finite: NonFiniteLoss, with its step) or *collapsed* (finite, but at chance from some epoch to the end, as
cnnlab's own check finds it: train/collapse.py). The cases:

  inception_net, 30-step warm-up   the setting that diverged in speed.py's throughput measurement (a 60-step plan
                                   warms up for 30 steps, then runs at the peak rate 0.05)
  folder                           the image-folder example of the README (resnet, 240 pictures of three outlined
                                   shapes, 96x96, --epochs 20 --batch-size 32: 4 steps an epoch, so a 4-step
                                   warm-up), which once collapsed to chance on such a folder

Writes benchmarks/results/stability.json and stability.md. Runs in this process, one after another.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe_machine, write_file, write_json  # noqa: E402

from cnnlab.data import load_data, load_mnist  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402
from cnnlab.train import fit, make_config  # noqa: E402
from cnnlab.train.loop import NonFiniteLoss  # noqa: E402

STEPS = 1000
SPE = 429  # MNIST's steps an epoch at batch 128 (55,000 training images)
CASES = {
    "inception_net-warmup30": dict(model="inception_net", steps=STEPS, warmup_epochs=30 / SPE),
    "folder": dict(model="resnet", epochs=20, batch_size=32),
}
LABELS = {
    "inception_net-warmup30": "inception_net, lr 0.05, 30-step warm-up, 1,000 steps",
    "folder": "resnet, 240-picture folder, --epochs 20 --batch-size 32 (80 steps)",
}


def draw_shapes(root: Path, per_class: int = 80, side: int = 96, seed: int = 0) -> Path:
    """A folder of outlined circles, squares and triangles of random size, place and colour (the README's case)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3)))
            d = ImageDraw.Draw(img)
            r = rng.uniform(0.15, 0.4) * side
            cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
            colour = tuple(rng.randrange(256) for _ in range(3))
            if shape == "circle":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=3)
            elif shape == "square":
                d.rectangle([cx - r, cy - r, cx + r, cy + r], outline=colour, width=3)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline=colour, width=3)
            img.save(root / shape / f"{i}.png")
    return root


def one_run(case: str, seed: int, clip: bool, data, tmp: str) -> dict:
    spec = dict(CASES[case])
    model = spec.pop("model")
    dataset = data.name
    cfg = make_config(model, dataset=dataset, seed=seed, device="cpu", **spec)
    if not clip:
        cfg = make_config(model, dataset=dataset, seed=seed, device="cpu", grad_clip=0.0, **spec)
    t0 = time.perf_counter()
    try:
        r = fit(cfg, data, out_root=tmp, progress=False)
    except NonFiniteLoss as e:
        return dict(case=case, seed=seed, clip=cfg.grad_clip, outcome="diverged", step=e.step,
                    seconds=time.perf_counter() - t0)
    last = r.history[-1]
    return dict(case=case, seed=seed, clip=cfg.grad_clip, outcome="ok" if r.collapsed_at_epoch is None else "collapsed",
                final_test_acc=100 * r.final_test_acc, train_acc=100 * last["train_acc"],
                seconds=time.perf_counter() - t0)


_ABOUT = "\n\n".join(__doc__.split("\n\n")[2:4]).strip()


def render(results: dict) -> str:
    rows = []
    for case in CASES:
        for clip in sorted({r["clip"] for r in results["runs"] if r["case"] == case}):
            rs = [r for r in results["runs"] if r["case"] == case and r["clip"] == clip]
            div = [r for r in rs if r["outcome"] == "diverged"]
            col = [r for r in rs if r["outcome"] == "collapsed"]
            ok = [r["final_test_acc"] for r in rs if r["outcome"] == "ok"]
            steps = ", ".join(str(r["step"]) for r in div) or "-"
            rows.append([LABELS[case], "off" if clip == 0 else f"{clip:g}", str(len(rs)), str(len(div)), steps,
                         str(len(col)), str(len(ok)),
                         f"{min(ok):.2f}..{max(ok):.2f}" if ok else "-"])
    table = format_table(["case", "grad clip", "seeds", "diverged", "at steps", "collapsed", "ok", "test acc of ok runs"],
                         rows, markdown=True)
    return f"""# Stability: training steps a user can reach, with and without gradient clipping

Machine: {results['machine']}.  
Command: `{results['command']}` (run from the repository root).

{_ABOUT}

{table}

*diverged*: the loss stopped being a finite number (the run stops at the next progress check and names the
first such step); *collapsed*: finite but at chance to the end (train/collapse.py). *test acc of ok runs*: final test accuracy, %, of the runs
that ended neither way (after 1,000 steps on MNIST; on the folder's 48 test images).
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), help="(default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)), help="(default: 0..9)")
    p.add_argument("--out", default=str(HERE / "results"), help="(default: benchmarks/results)")
    p.add_argument("--resume", action="store_true", help="keep runs already in stability.json (default: off)")
    p.add_argument("--report-only", action="store_true", help="rewrite stability.md from stability.json")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "stability.json"
    if args.report_only:
        write_file(out / "stability.md", render(json.loads(json_path.read_text())))
        return 0
    results = json.loads(json_path.read_text()) if args.resume and json_path.exists() else {"runs": []}
    results["machine"] = describe_machine()
    results["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    done = {(r["case"], r["seed"], r["clip"] > 0) for r in results["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        mnist = None
        for case in args.cases:
            if case == "folder":
                data = load_data(f"imagefolder:{draw_shapes(Path(tmp) / 'shapes')}", progress=False)
            else:
                data = mnist = mnist or load_mnist(progress=False)
            for clip in (False, True):
                for seed in args.seeds:
                    if (case, seed, clip) in done:
                        continue
                    r = one_run(case, seed, clip, data, tmp)
                    results["runs"].append(r)
                    write_json(json_path, results)
                    print(f"{case} clip {r['clip']:g} seed {seed}: {r['outcome']}"
                          f"{' at step ' + str(r['step']) if 'step' in r else ''}"
                          f"{' test %.2f%%' % r['final_test_acc'] if 'final_test_acc' in r else ''} ({r['seconds']:.0f}s)", flush=True)
    write_file(out / "stability.md", render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
