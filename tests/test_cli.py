import os
import subprocess
import sys

import pytest
import torch

from cnnlab.cli import main
from cnnlab.models import list_models
from cnnlab.train import fit, make_config
from cnnlab.runs import save_checkpoint

from .support.cli import run_cli


def test_models_lists_every_model_with_parameters_and_flops(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name, params in (("basic_cnn", "8,490"), ("inception_net", "97,298"), ("resnet", "41,514")):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert params in line
    assert "FLOPs" in out and "multiply-add" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--lr", "-1"],
        ["train", "--batch-size", "many"],
        ["train", "--recipe", "magic"],
        ["train", "--device", "tpu"],
        ["train", "--no-such-flag"],
        ["train", "--time-budget", "-1"],  # 0 is allowed: off, as not giving it
        ["train", "--amp", "fp8"],
        ["train", "--cutout", "-1"],
        ["evaluate", "ckpt", "--tta-hflip", "yes"],
        ["evaluate"],
        ["compare"],
        ["predict", "ckpt"],
        ["predict", "ckpt", "a.png", "--top", "0"],
        ["serve", "--runs-root"],
        ["serve", "ckpt", "--port", "70000"],
        ["serve", "ckpt", "--port", "http"],
        ["export", "ckpt"],
        ["export", "ckpt", "--format", "tflite"],
        ["analyze"],
        ["analyze", "speed"],
        ["analyze", "depth", "--depths", "3"],
        ["analyze", "depth", "--steps", "0"],
        ["analyze", "branches"],
        ["report", "--budget", "-5"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_unknown_model_exits_2_before_any_work(capsys):
    code, _, err = run_cli(capsys, "train", "--model", "resnet", "vgg")
    assert code == 2
    assert err.strip().splitlines() == [
        f"cnnlab train: error: unknown model 'vgg'; choose from: {', '.join(list_models())}, lecture or all"]


def test_missing_or_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nope.pt"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no checkpoint" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(capsys, "evaluate", str(bad))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not a PyTorch checkpoint" in err


def test_compare_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", str(tmp_path))
    assert code == 1 and "not a finished cnnlab run" in err


def test_compare_two_runs_prints_table_and_writes_figure(tiny_mnist, tmp_path, capsys):
    dirs = [
        fit(make_config(m, epochs=1, batch_size=100, val_size=100, device="cpu"), tiny_mnist, tmp_path, progress=False).run_dir
        for m in ("basic_cnn", "resnet")
    ]
    fig = tmp_path / "cmp.png"
    code, out, _ = run_cli(capsys, "compare", *map(str, dirs), "--out", str(fig))
    assert code == 0 and fig.stat().st_size > 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "recipe", "data", "params"]
    assert lines[2].startswith("basic_cnn") and "8,490" in lines[2]
    assert lines[3].startswith("resnet") and "41,514" in lines[3]


def test_train_flags_set_the_config_and_the_rest_keep_the_data_sets_recipe():
    from cnnlab.cli import build_parser
    from cnnlab.cli.train import train_specs

    args = build_parser().parse_args(["train", "--model", "resnet_bn", "--dataset", "fashion-mnist", "--cutout", "8", "--tta-hflip"])
    (spec,) = train_specs(args, ["resnet_bn"])
    cfg = spec.config
    assert (cfg.cutout, cfg.tta_hflip) == (8, True)
    assert (cfg.hflip, cfg.max_rotate, cfg.epochs, cfg.dataset) == (True, 0.0, 15, "fashion-mnist")  # Fashion-MNIST's recipe
    args = build_parser().parse_args(["train", "--model", "resnet", "--lr", "0.2"])
    (spec,) = train_specs(args, ["resnet"])
    cfg = spec.config
    assert (cfg.cutout, cfg.tta_hflip, cfg.hflip, cfg.lr, cfg.max_rotate) == (0, False, False, 0.2, 10.0)


@pytest.mark.processes
def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "example" in out.stdout


@pytest.mark.slow
def test_train_then_evaluate_on_real_mnist(real_mnist, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--model", "basic_cnn", "--epochs", "1", "--out", str(tmp_path), "--no-progress")
    assert code == 0
    run = next(tmp_path.glob("*-basic_cnn"))
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc > 97.0
    code, out, _ = run_cli(capsys, "evaluate", str(run))
    assert code == 0
    assert f"test accuracy {acc:.2f}%" in out  # evaluate reproduces what training reported for best.pt
    assert (run / "confusion.png").stat().st_size > 0
    assert len([ln for ln in out.splitlines() if "->" in ln]) >= 1
    # The checkpoint of another model does not load into this one.
    state = torch.load(run / "best.pt", weights_only=True)
    state = {k: v for k, v in state.items() if k not in ("sha256", "format_version")}
    state["config"]["model"] = "resnet"
    save_checkpoint(tmp_path / "wrong.pt", state)  # well-formed, so what refuses it is the weights' shapes
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "wrong.pt"))
    assert code == 1 and "do not fit model 'resnet'" in err


def test_corrupt_data_dir_is_a_clear_error_and_the_files_stay(tmp_path, capsys):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    (data_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    code, _, err = run_cli(capsys, "train", "--model", "basic_cnn", "--data-dir", str(data_dir), "--out", str(tmp_path))
    assert code == 1
    assert err.startswith(f"cnnlab train: error: data dir {data_dir}:") and "train-images-idx3-ubyte.gz" in err
    assert "Traceback" not in err
    assert (data_dir / "train-images-idx3-ubyte.gz").read_bytes() == b"not gzip at all"
    assert not any(tmp_path.glob("*-basic_cnn"))  # no run directory for a run that never started


@pytest.mark.parametrize(
    "argv", [["--epochs", "2", "--time-budget", "10"], ["--steps", "5", "--epochs", "2"], ["--steps", "5", "--time-budget", "9"]]
)
def test_two_ways_of_setting_the_length_is_a_usage_error(argv, capsys):
    code, _, err = run_cli(capsys, "train", *argv)
    assert code == 2 and "give one of --epochs, --steps and --time-budget" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags", [["--epochs", "3"], ["--model", "resnet"], ["--lr", "0.1"], ["--seed", "0"], ["--cutout", "8"], ["--tta-hflip"]]
)
def test_resume_with_settings_of_its_own_is_a_usage_error(flags, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path), *flags)
    assert code == 2 and "--resume continues a run with its own settings" in err and flags[0] in err


def test_resume_of_what_is_not_a_run_or_a_run_in_use_is_one_line(tiny_mnist, tmp_path, capsys, reliability):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 1 and "has no last.pt to resume from" in err and len(err.strip().splitlines()) == 1
    from cnnlab.runs.rundir import RunDirLock

    run = fit(make_config("basic_cnn", epochs=1, batch_size=100, val_size=100, device="cpu"), tiny_mnist, tmp_path, progress=False).run_dir
    lock = RunDirLock(run)  # as a run still training in it holds it
    try:
        before = (run / "metrics.csv").read_bytes()
        code, _, err = run_cli(capsys, "train", "--resume", str(run))
        assert code == 1 and "is in use" in err and f"process {__import__('os').getpid()}" in err
        assert (run / "metrics.csv").read_bytes() == before
    finally:
        lock.release()
    reliability("training", "--resume of a directory that is not a run, and of a run another process is training in", 2,
                "one line each ('has no last.pt to resume from'; 'is in use: process N is training in it'), exit 1; "
                "the running run's files untouched")


_OUT_OF_RANGE = [
    ["train", "--time-budget", "1e308"], ["report", "--budget", "1e308"], ["train", "--lr", "1e300"],
    ["train", "--image-size", "100000"], ["analyze", "depth", "--width", "100000"], ["analyze", "depth", "--depths", "2", "1000"],
    ["analyze", "depth", "--steps", "10000000"], ["train", "--seed", "1e23"], ["train", "--seed", str(10**23)],
    ["train", "--threads", "100000"], ["train", "--threads", "-5"], ["evaluate", "RUN", "--threads", "-5"],
    ["train", "--epochs", "1000000"], ["train", "--steps", "-1"], ["train", "--batch-size", "100000"], ["train", "--lr", "nan"],
    ["train", "--max-rotate", "inf"], ["train", "--cutout", "-3"], ["predict", "RUN", "x.png", "--top", "0"],
    ["report", "--seeds", "100000"],
]


@pytest.mark.parametrize("argv", _OUT_OF_RANGE, ids=lambda a: " ".join(a))
def test_every_number_out_of_its_range_is_one_line_and_exit_2(argv, capsys, reliability):
    """Each number a command takes has a range (declared once: TrainConfig's fields for the run flags), checked
    while parsing, before any work: a value the code below could not hold (an overflow, gigabytes, a libgomp error)
    never reaches it."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "must be" in err or "expected a whole number" in err, err
    reliability("command line", "numbers out of range: --time-budget and report --budget 1e308, --lr 1e300 and nan, "
                "--image-size 100000, analyze depth --width 100000 and a depth of 1000, --seed 1e23 and 10^23, --threads "
                "100000 and -5, huge --epochs and --batch-size, negative --steps and --cutout, --top 0, 100,000 seeds", 1,
                "exit 2 and one line naming the flag and its range, before any work")


def test_resume_takes_exactly_the_path_it_is_given(tiny_run, tmp_path, capsys, reliability):
    """A path that does not exist is an error naming it (never its parent's run); best.pt is not a place to resume
    from; a directory or its last.pt is."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for given, expect in [(run / "typo", f"{run / 'typo'} does not exist"), (tmp_path / "nonexistent", "nonexistent does not exist"),
                          (run / "best.pt", "is not a run's last.pt")]:
        code, out, err = run_cli(capsys, "train", "--resume", str(given))
        assert code == 1 and err.count("\n") == 1 and expect in err and out == "", (given, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the parent run was not resumed
    for given in (run, run / "last.pt"):
        code, out, err = run_cli(capsys, "train", "--resume", str(given))
        assert code == 0 and f"{run} had already finished" in out, (given, out, err)
    reliability("training", "--resume RUN/typo, --resume /nonexistent, --resume RUN/best.pt", 3,
                "one line naming the path given, exit 1; the run above the typo untouched")


def test_a_finished_run_is_reported_finished_only_once_its_files_are_checked(tiny_run, tmp_path, capsys, reliability):
    """--resume of a finished run trains nothing and says so, after loading best.pt and last.pt and reading its run
    files: a truncated best.pt or a missing config.json is one line naming it, never a success."""
    import shutil

    cases = {
        "best.pt truncated": (lambda run: (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:3000]), "best.pt: truncated"),
        "config.json missing": (lambda run: (run / "config.json").unlink(), "missing config.json"),
        "summary.json not a mapping": (lambda run: (run / "summary.json").write_text("[]"), "summary.json is not a summary"),
        "best.pt of another epoch": (lambda run: shutil.copy(tiny_run / "last.pt", run / "best.pt"), None),
    }
    for i, (case, (damage, expect)) in enumerate(cases.items()):
        run = tmp_path / f"run{i}"
        shutil.copytree(tiny_run, run)
        damage(run)
        code, out, err = run_cli(capsys, "train", "--resume", str(run))
        if expect is None:  # best.pt is last.pt here when the best epoch was the last: then it is whole and right
            best = torch.load(tiny_run / "best.pt", weights_only=True)["epoch"]
            last = torch.load(tiny_run / "last.pt", weights_only=True)["epoch"]
            assert (code == 0) == (best == last), (case, err)
            continue
        assert code == 1 and err.count("\n") == 1 and expect in err and "test accuracy" not in out, (case, out, err)
    reliability("training", "--resume of a finished run whose best.pt is truncated, whose config.json is missing, whose "
                "summary.json is not one cnnlab wrote", 3, "one line naming the file, exit 1, no success line first; a "
                "whole finished run: 'had already finished ... checked: nothing to resume', exit 0")


@pytest.mark.slow
def test_predict_and_export_from_the_command_line(trained_resnet, real_mnist, tmp_path, capsys):
    import json

    from PIL import Image

    i = real_mnist.test_labels.tolist().index(3)
    png = tmp_path / "three.png"
    Image.fromarray(255 - real_mnist.test_images[i].numpy()).resize((100, 100)).save(png)
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)

    code, out, err = run_cli(capsys, "predict", str(trained_resnet), str(png))
    assert code == 0 and out.startswith(f"{png}: 3"), out
    code, out, err = run_cli(capsys, "predict", str(trained_resnet), str(png), "--json")
    doc = json.loads(out)
    assert doc["predictions"][0]["top"][0]["class"] == 3 and doc["model"]["model"] == "resnet"
    code, out, err = run_cli(capsys, "predict", str(trained_resnet), str(blank), str(tmp_path / "missing.png"))
    assert code == 1 and err.count("error:") == 2 and "cannot read" in err
    assert f"{blank}: the image holds no ink" in err  # every message names its file

    code, out, err = run_cli(capsys, "export", str(trained_resnet), "--format", "torchscript", "--out", str(tmp_path / "m.pt"))
    assert code == 0 and (tmp_path / "m.pt").stat().st_size > 0


def test_predict_serve_export_with_a_bad_checkpoint_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    for argv in (["predict", str(bad), "x.png"], ["serve", str(bad)], ["export", str(bad), "--format", "onnx"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 1, argv
        assert len(err.strip().splitlines()) == 1 and "not a PyTorch checkpoint" in err


def test_analyze_cost_prints_the_lecture_example_and_writes_its_figure(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "analyze", "cost", "--out", str(tmp_path))
    assert code == 0 and "120,422,400" in out and "12,443,648" in out
    assert (tmp_path / "cost.png").stat().st_size > 10_000
    code, _, err = run_cli(capsys, "analyze", "cost", "--model", "vgg")
    assert code == 2 and "unknown model" in err


@pytest.mark.slow
def test_report_from_given_runs_writes_every_section_and_figure(trained_resnet, trained_inception, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, out, err = run_cli(capsys, "report", "--runs", str(trained_resnet), str(trained_inception), "--checkpoints",
                          str(trained_inception), "--depths", "2", "4", "--steps", "5", "--out", str(out_dir))
    assert code == 0, err
    text = (out_dir / "README.md").read_text()
    assert "Data: MNIST (60,000 training and 10,000 test images" in text
    assert "on the 10,000 MNIST test images" in text
    for heading in ("## 1.", "## 2.", "## 3 and 4.", "## The networks compared"):
        assert heading in text
    for fig in ("cost.png", "branches.png", "depth_gradients.png", "depth_training.png", "compare.png"):
        assert f"({fig})" in text and (out_dir / fig).stat().st_size > 10_000
    import re

    assert "gradient (training)" in text and re.search(r"\| incep1 +\| 5x5 +\|", text)


@pytest.mark.slow
def test_report_reads_what_it_is_given_before_it_trains_anything(trained_resnet, tmp_path, capsys):
    out_dir = tmp_path / "report"
    cases = [
        (["--checkpoints", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--runs", str(tmp_path)], "summary.json"),  # a directory that holds no run
        (["--checkpoints", str(trained_resnet)], "has no Inception blocks to analyse"),
    ]
    for given, said in cases:
        code, out, err = run_cli(capsys, "report", *given, "--out", str(out_dir))
        assert code == 1 and len(err.strip().splitlines()) == 1 and said in err, (given, err)
        assert "training" not in out and not (out_dir / "runs").exists()  # nothing was trained first


def _usage_error_cases() -> list[list[str]]:
    """Wrong arguments for every subcommand, read off the parser itself: an unknown flag, a missing
    positional, and a bad value for every option that checks its value (a type or a list of choices)."""
    import argparse

    from cnnlab.cli import build_parser

    def subparsers(p: argparse.ArgumentParser):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from action.choices.items()

    def commands(p, prefix):
        subs = list(subparsers(p))
        if not subs:
            yield prefix, p
        for name, sp in subs:
            yield from commands(sp, [*prefix, name])

    cases = []
    for cmd, p in commands(build_parser(), []):
        positionals = [a for a in p._actions if not a.option_strings and a.nargs != 0 and a.dest != "help"]
        filler = ["x"] * sum(1 for a in positionals if a.nargs in (None, "+"))
        cases.append([*cmd, *filler, "--no-such-flag"])
        if any(a.required or a.nargs in (None, "+") for a in positionals):
            cases.append(cmd)
        for a in p._actions:
            if a.option_strings and (a.type is not None or a.choices) and a.nargs != 0:
                cases.append([*cmd, *filler, a.option_strings[-1], "-1x"])
    return cases


_USAGE_CASES = _usage_error_cases()


def test_every_subcommand_given_wrong_arguments_exits_2_with_one_line(capsys, reliability):
    commands = {tuple(c[:2]) if c[0] == "analyze" else (c[0],) for c in _USAGE_CASES}
    assert {"train", "evaluate", "compare", "predict", "serve", "export", "report", "models"} <= {c[0] for c in commands}
    for argv in _USAGE_CASES:
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        assert e.value.code == 2, argv
        assert len(err.strip().splitlines()) == 1 and "error" in err and "Traceback" not in err, (argv, err)
    reliability("command line", f"wrong arguments to each of the {len(commands)} subcommands: an unknown flag, a missing "
                "argument, a bad value for every option that checks one", len(_USAGE_CASES),
                "exit status 2 and one line naming the problem, every time")


def _garment_png(path):
    from PIL import Image, ImageDraw

    img = Image.new("L", (60, 80), 250)
    ImageDraw.Draw(img).rectangle((15, 10, 45, 70), fill=30)  # a dark item on white, as in a product photo
    img.save(path)
    return path


def test_predict_reports_each_bad_file_on_its_own_line_and_predicts_the_rest(fashion_named_run, tmp_path, capsys, reliability):
    import json

    good = str(_garment_png(tmp_path / "dress.png"))
    folder = tmp_path / "folder"
    folder.mkdir()
    bad = [str(folder), str(tmp_path / "missing.png"), "/dev/null"]
    code, out, err = run_cli(capsys, "predict", str(fashion_named_run), bad[0], good, *bad[1:], good)
    assert code == 1
    assert [ln.split(":")[0] for ln in out.splitlines()] == [good, good]  # before and after the bad files
    assert err.splitlines() == [
        f"cnnlab predict: error: {bad[0]}: is a directory, not an image file",
        f"cnnlab predict: error: {bad[1]}: cannot read (No such file or directory)",
        f"cnnlab predict: error: {bad[2]}: is a device, not an image file",
    ]
    code, out, err = run_cli(capsys, "predict", str(fashion_named_run), bad[0], good, "--json")
    doc = json.loads(out)
    assert code == 1 and err == ""
    assert "is a directory" in doc["predictions"][0]["error"] and doc["predictions"][1]["top"][0]["name"]
    reliability("images to predict", "a directory, a missing file and a device among the images given to cnnlab predict", 3,
                "one line per bad file naming it, the other images still predicted, exit 1")


def test_predict_refuses_a_save_input_that_is_a_file_before_predicting(fashion_named_run, tmp_path, capsys):
    good = str(_garment_png(tmp_path / "dress.png"))
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for target in (taken, taken / "inside"):
        code, out, err = run_cli(capsys, "predict", str(fashion_named_run), good, "--save-input", str(target))
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (target, err)
        assert err.startswith(f"cnnlab predict: error: --save-input {target}") and "Errno" not in err
    assert taken.read_text() == "mine"
    code, out, _ = run_cli(capsys, "predict", str(fashion_named_run), good, "--save-input", str(tmp_path / "seen"))
    assert code == 0 and [p.name for p in (tmp_path / "seen").iterdir()] == ["dress.png-28x28.png"]


@pytest.mark.processes
def test_a_reader_that_leaves_early_ends_the_command_quietly():
    # `cnnlab models | head -1` with head gone before cnnlab writes: a real pipe whose reading end is closed.
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err == b"" and proc.returncode == 141  # 128 + SIGPIPE, as a Unix tool the signal ended


def test_evaluate_mirrors_as_the_model_was_trained_unless_told_otherwise(tmp_path, capsys):
    from .support.runs import train_on_shapes

    mirrored = "each averaged with its mirror image"
    run = train_on_shapes(tmp_path / "tta", tta_hflip=True)
    assert mirrored in run_cli(capsys, "evaluate", str(run))[1]
    code, out, _ = run_cli(capsys, "evaluate", str(run), "--no-tta-hflip")
    assert code == 0 and "test accuracy" in out and mirrored not in out
    plain = train_on_shapes(tmp_path / "plain")
    assert mirrored not in run_cli(capsys, "evaluate", str(plain))[1]
    assert mirrored in run_cli(capsys, "evaluate", str(plain), "--tta-hflip")[1]


_MODEL_COMMANDS = [["train"], ["evaluate", "RUN"], ["predict", "RUN", "x.png"], ["serve", "RUN"],
                   ["export", "RUN", "--format", "onnx"], ["analyze", "branches", "RUN"], ["analyze", "depth"], ["report"]]


@pytest.mark.parametrize("argv", _MODEL_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_that_runs_a_model_takes_the_same_device_and_threads(argv):
    from cnnlab.cli import build_parser
    from cnnlab.device import DEVICES

    args = build_parser().parse_args([*argv, "--device", "cpu", "--threads", "2"])
    assert (args.device, args.threads) == ("cpu", 2)
    default = build_parser().parse_args(argv)
    assert default.device in DEVICES and default.threads >= 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_an_absent_device_is_one_line_for_predict_and_analyze(fashion_named_run, tmp_path, capsys):
    _garment_png(tmp_path / "g.png")
    for argv in (["predict", str(fashion_named_run), str(tmp_path / "g.png")], ["analyze", "depth", "--depths", "2"]):
        assert main([*argv, "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "PyTorch sees no CUDA GPU" in err, err


def test_predict_runs_with_the_threads_it_is_given(fashion_named_run, tmp_path, capsys):
    import torch

    _garment_png(tmp_path / "g.png")
    before = torch.get_num_threads()
    try:
        assert main(["predict", str(fashion_named_run), str(tmp_path / "g.png"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.processes
@pytest.mark.parametrize("given, expected", [(None, "10000"), ("300000", "300000")])
def test_the_command_sets_openmps_spin_count_before_torch_loads_and_keeps_the_users(given, expected):
    # libgomp reads GOMP_SPINCOUNT once, when torch loads it: the command must set it first, and leave a user's own.
    probe = ("import atexit, os, sys\n"
             "from cnnlab.cli import entry\n"
             "assert 'torch' not in sys.modules, 'torch was loaded before the command could set the spin count'\n"
             "atexit.register(lambda: print('SPIN', os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules))\n"
             "sys.argv = ['cnnlab', 'models']\n"
             "entry()\n")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"SPIN {expected} True"  # set, and torch loaded after it
