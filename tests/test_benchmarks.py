"""The benchmarks' failure handling: a run that fails is recorded with its reason, the benchmark goes on, and the
tables show it. The scripts in benchmarks/ are imported as the benchmarks import each other."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.config import make_config
from cnnlab.device import bfloat16_units

from .support.data import synthetic_mnist

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCHMARKS / "results"
sys.path.insert(0, str(BENCHMARKS))

import accuracy  # noqa: E402
import averaging  # noqa: E402
import distributed  # noqa: E402
import gpu  # noqa: E402
import machine  # noqa: E402
import serve  # noqa: E402

DIVERGED = ("NonFiniteLoss: the training loss stopped being a finite number at step 38 (epoch 1); training stopped and "
            "no epoch had finished, so nothing was kept. Try a lower --lr (now 0.05)")


def _saved(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


# ---- the shared helper ------------------------------------------------------------------------------------------


def test_attempt_records_the_reason_and_the_next_run_goes_on():
    def run(seed: int) -> float:
        if seed == 1:
            raise ValueError("the loss went to NaN\nat step 3")
        return seed / 10

    results = [machine.attempt(run, seed) for seed in range(3)]

    assert results == [(0.0, None), (None, "ValueError: the loss went to NaN ... at step 3"), (0.2, None)]


def test_attempt_passes_keyword_arguments_and_lets_ctrl_c_through():
    assert machine.attempt(dict, a=1) == ({"a": 1}, None)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        machine.attempt(interrupted)


def test_a_reason_is_one_line_and_bounded():
    reason = machine.failure_reason(RuntimeError("first\n" + "x" * 2000 + "\n\nthe end"))

    assert "\n" not in reason
    assert reason.startswith("RuntimeError: first ... ") and reason.endswith("the end")
    assert len(reason) <= 400
    assert machine.failure_reason(KeyError()) == "KeyError"


def test_a_failed_process_is_named_by_its_last_stderr_line():
    script = "echo 'a warning' >&2; echo 'cnnlab train: error: the training loss stopped being a finite number' >&2; exit 3"
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)

    _, reason = machine.attempt(_check, proc)

    assert reason == ("ProcessFailed: cnnlab train exited with status 3: "
                      "cnnlab train: error: the training loss stopped being a finite number")


def _check(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        raise machine.ProcessFailed("cnnlab train", proc.returncode, proc.stderr)


def test_a_failed_torchrun_is_named_by_its_workers_error_not_by_its_report_box():
    stderr = "\n".join([
        "Traceback (most recent call last):",
        '  File "distributed.py", line 3, in <module>',
        "cnnlab.train.loop.NonFiniteLoss: the training loss stopped being a finite number at step 38 (epoch 1)",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
        "Root Cause (first observed failure):",
        "  error_file: <N/A>",
        "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html",
        "============================================================",
    ])

    failed = machine.ProcessFailed("torchrun", 1, stderr.encode())

    assert failed.last_line.startswith("cnnlab.train.loop.NonFiniteLoss: the training loss stopped")
    assert str(machine.ProcessFailed("python", 1, "")) == "python exited with status 1: (nothing on stderr)"


def test_failure_of_reads_old_records_as_finished():
    assert machine.failure_of({"test_acc": 99.1}) is None
    assert machine.failure_of(1234.5) is None  # a bare figure, as old throughput records are
    assert machine.failure_of({"failed": "ValueError: x"}) == "ValueError: x"


# ---- accuracy.py ------------------------------------------------------------------------------------------------


HERE = accuracy._precision(make_config("inception_net"))  # what the default recipe trains in on this machine's CPU


def _row(label: str) -> str:
    """A row's recipe label for runs of this machine's precision."""
    return label + (", bfloat16 steps" if HERE == "bfloat16" else "")


def _record(seed: int, acc: float | None, cpu: str | None = "CPU A", wall: float = 100.0, epochs: int = 12,
            precision: str = HERE) -> dict:
    r = dict(dataset="mnist", model="inception_net", recipe="default", seed=seed, epochs=epochs, wall_seconds=wall,
             command="c", grad_clip=2.0, precision=precision)
    if cpu is not None:
        r["cpu"] = cpu
    if acc is None:
        r["failed"] = DIVERGED
    else:
        r.update(test_acc=acc, best_epoch=10, best_val_acc=acc, final_test_acc=acc)
    return r


def test_accuracy_table_shows_a_failed_run_and_means_over_the_finished():
    runs = [_record(0, 99.30), _record(1, None, wall=5.0), _record(2, 99.50, wall=120.0)]

    (row,) = accuracy.summarise(runs)
    md = accuracy.render_markdown(runs, "the machine (PyTorch kernels: AVX2)")

    cells = dict(zip(accuracy.HEADERS, row))
    assert cells["seeds"] == "3 (1 failed)"
    assert cells["test acc (mean ± std)"] == "99.40 ± 0.14"
    assert cells["min..max"] == "99.30..99.50"
    assert cells["met"] == "no (-0.05)"
    assert cells["wall s/run"] == "110"  # the failed run's 5 s is not a run's wall time
    assert f"- mnist inception_net default seed 1: failed: {DIVERGED}" in md
    assert "Machine: the machine (PyTorch kernels: AVX2)" in md


def test_accuracy_row_whose_runs_all_failed():
    (row,) = accuracy.summarise([_record(0, None), _record(1, None)])

    cells = dict(zip(accuracy.HEADERS, row))
    assert cells["seeds"] == "2 (2 failed)"
    assert cells["test acc (mean ± std)"] == "- (all failed)"
    assert cells["met"] == "no (no run finished)"
    assert cells["wall s/run"] == "-"


def test_accuracy_wall_names_the_cpu_when_a_rows_runs_differ():
    runs = [_record(0, 99.3, cpu="AMD EPYC (PyTorch kernels: AVX2)", wall=150.0),
            _record(1, 99.4, cpu="AMD EPYC (PyTorch kernels: AVX512)", wall=90.0),
            _record(2, 99.5, cpu=None, wall=160.0)]

    (row,) = accuracy.summarise(runs)
    md = accuracy.render_markdown(runs, "m")

    assert row[-1] == "150 (CPU 1); 90 (CPU 2); 160 (CPU not recorded)"
    assert "- CPU 1: AMD EPYC (PyTorch kernels: AVX2), 1 runs" in md
    assert "- CPU 2: AMD EPYC (PyTorch kernels: AVX512), 1 runs" in md
    assert md.startswith("# Accuracy") and "Machine of the last command (each run names its CPU: below the table): m." in md
    same = accuracy.summarise([_record(0, 99.3, wall=150.0), _record(1, 99.4, wall=90.0)])
    assert same[0][-1] == "120"


def test_accuracy_resume_keeps_failed_runs_unless_asked_to_retry():
    runs = [_record(0, 99.3), _record(1, None)]
    old = {k: v for k, v in _record(2, 99.4).items() if k not in ("dataset", "cpu")}  # from before those fields
    planned = [("mnist", "inception_net", "default", s) for s in range(4)]

    todo, kept = accuracy.plan_runs(planned, [*runs, old])
    assert todo == [planned[3]] and len(kept) == 3

    todo, kept = accuracy.plan_runs(planned, [*runs, old], retry_failed=True)
    assert todo == [planned[1], planned[3]]
    assert [r["seed"] for r in kept] == [0, 2]  # the failed record gives way to the new run

    unclipped = {k: v for k, v in _record(3, 99.4).items() if k != "grad_clip"}  # from before the recipe clipped
    todo, kept = accuracy.plan_runs(planned, [*runs, old, unclipped])
    assert todo == [planned[3]] and len(kept) == 4  # kept as measured, and run again with the recipe now
    rows = accuracy.summarise(kept)
    assert [r[2] for r in rows] == [_row("default"), _row("default, before clipping")]

    longer = _record(3, 99.5, epochs=20)  # the default recipe at other epochs than inception_net's 12
    todo, kept = accuracy.plan_runs(planned, [*runs, old, longer])
    assert todo == [planned[3]] and len(kept) == 4
    rows = accuracy.summarise(kept)
    assert [(r[2], r[4], r[5]) for r in rows] == [(_row("default"), "12", "99.35 ± 0.07"),
                                                  (_row("default, 20 epochs"), "20", "99.50 ± 0.00")]
    assert [(r[8], r[9]) for r in rows] == [("99.45", "no (-0.10)"), ("-", "-")]  # a variant's row is not judged
    todo, _ = accuracy.plan_runs(planned, [*runs, old, longer], epochs=20)  # --epochs 20: only seed 3 has run
    assert todo == planned[:3]


def test_a_run_whose_steps_ran_in_the_other_precision_has_a_row_of_its_own_judged_alike():
    other = "float32" if HERE == "bfloat16" else "bfloat16"
    runs = [_record(0, 99.3), _record(1, 99.4), _record(0, 99.5, precision=other)]
    planned = [("mnist", "inception_net", "default", s) for s in range(3)]
    todo, kept = accuracy.plan_runs(planned, runs)
    assert todo == [planned[2]] and len(kept) == 3  # the other precision's seed 0 is no run of this machine's
    old = {k: v for k, v in _record(2, 99.6).items() if k != "precision"}  # from before it was recorded: float32
    assert accuracy.plan_runs(planned, [*runs, old])[0] == ([] if HERE == "float32" else [planned[2]])
    rows = accuracy.summarise(kept)
    labels = {"float32": "default", "bfloat16": "default, bfloat16 steps"}
    assert [r[2] for r in rows] == [labels["float32"], labels["bfloat16"]]
    assert [(r[5], r[8]) for r in rows if r[2] == labels[HERE]] == [("99.35 ± 0.07", "99.45")]
    assert [(r[5], r[8], r[9]) for r in rows if r[2] == labels[other]] == [("99.50 ± 0.00", "99.45", "yes")]
    assert "bfloat16 autocast" in accuracy.render_markdown(kept, "m")


def test_a_run_that_really_diverges_is_recorded_as_failed(tmp_path):
    data = synthetic_mnist(train=300, test=50, seed=0)

    run = accuracy.run_one("mnist", "basic_cnn", "default", 0, data, tmp_path, "cmd", lr=1e5, steps=12, batch_size=50,
                           val_size=50, log_every=4)

    assert run["failed"].startswith("NonFiniteLoss: the training loss stopped being a finite number at step ")
    assert "test_acc" not in run
    assert run["cpu"] == machine.cpu_kind() and run["wall_seconds"] > 0
    (row,) = accuracy.summarise([run])
    assert row[3] == "1 (1 failed)"


def test_a_run_that_finishes_records_its_accuracy_and_cpu(tmp_path):
    data = synthetic_mnist(train=300, test=50, seed=0)

    run = accuracy.run_one("mnist", "basic_cnn", "default", 0, data, tmp_path, "cmd", steps=3, batch_size=50, val_size=50)

    assert "failed" not in run
    assert 0 <= run["test_acc"] <= 100 and run["cpu"] == machine.cpu_kind() and run["wall_seconds"] > 0
    assert run["precision"] == ("bfloat16" if bfloat16_units() else "float32")  # --amp auto: bf16 on bf16 CPUs


# ---- old results files and failed measurements in the other tables -----------------------------------------------


@pytest.mark.parametrize("name", ["accuracy", "distributed"])
def test_report_only_renders_old_results_as_before(name):
    saved = _saved(name)
    md = accuracy.render_markdown(saved["runs"], saved["machine"]) if name == "accuracy" else distributed.render(saved)

    assert md == (RESULTS / f"{name}.md").read_text()


@pytest.mark.parametrize("name,render", [("serve", serve.render), ("gpu", gpu.render),
                                         ("distributed_failure", distributed.render_failure)])
def test_old_results_render_with_their_machine(name, render):
    saved = _saved(name)
    md = render(saved)

    assert f"Machine: {saved['machine']}" in md
    assert "failed" not in md


def test_distributed_shows_a_failed_arrangement_and_a_failed_all_reduce():
    saved = _saved("distributed")
    model = next(iter(saved["models"]))
    broken = copy.deepcopy(saved)
    broken["models"][model]["throughput"]["2 procs x 1 thread"] = {"failed": "ProcessFailed: torchrun exited with status 1: x"}
    md = distributed.render(broken)
    assert f"- {model}, 2 procs x 1 thread: failed: ProcessFailed: torchrun exited with status 1: x" in md
    assert "Fitted: time" in md  # the rest is still there

    broken["allreduce"] = {"failed": "ProcessFailed: torchrun exited with status 1: y"}
    del broken["allreduce_fit"]
    broken["throughput_lr"] = machine.TIMING_LR
    md = distributed.render(broken)
    assert "- the all-reduce sweep: failed: ProcessFailed: torchrun exited with status 1: y" in md
    assert "Not worked out: it needs" in md
    assert "Steps timed at lr 0.0001 so that no setting can diverge" in md


def test_gpu_shows_failed_runs_and_throughput():
    saved = _saved("gpu")
    model = next(iter(saved["models"]))
    per = saved["models"][model]
    per["budget"][0] = {"arm": "budget", "model": model, "seed": 0, "budget": per["budget"][0]["budget"], "failed": DIVERGED}
    per["throughput"]["batch 512, off"] = {"failed": DIVERGED}
    saved["throughput_lr"] = 1e-4

    md = gpu.render(saved)

    budget = f"budget {per['budget'][0]['budget']:g} s"
    # the file's runs: one per budget; the failed one leaves its row without figures
    assert re.search(rf"\|\s*{model}\s*\|\s*{budget}\s*\|\s*1 \(1 failed\)\s*\|\s*-\s*\|\s*-\s*\|\s*-\s*\|", md)
    assert f"- {model} {budget} seed 0: failed: {DIVERGED}" in md
    assert f"- {model} throughput, batch 512, off: failed: {DIVERGED}" in md
    assert "steps timed at lr 0.0001 so that no setting can diverge" in md


def test_serve_shows_failed_measurements_in_place_of_their_figures():
    saved = _saved("serve")
    saved["latency"] = {"failed": "ProcessFailed: cnnlab serve exited with status 1: boom"}
    saved["server"][1] = {"clients": 8, "failed": "ReadTimeout: timed out"}
    saved["explain"][0] = {"model": "resnet", "failed": "RuntimeError: /api/explain of resnet: HTTP 500"}
    saved["memory"] = {"failed": "OSError: no /proc"}

    md = serve.render(saved)

    assert "The measurement failed: ProcessFailed: cnnlab serve exited with status 1: boom" in md
    assert "The load test with 8 clients failed: ReadTimeout: timed out" in md
    assert "resnet failed: RuntimeError: /api/explain of resnet: HTTP 500" in md
    assert "The measurement failed: OSError: no /proc" in md
    assert "| basic_cnn" in md  # the models whose measurement finished keep their rows


def test_serve_with_no_model_to_serve_records_every_measurement_as_failed():
    import argparse

    results = {"machine": "m", "cpu": "c", "command": "cmd", "checkpoint_note": "", "load_average": [0.0, 0.0]}

    serve.measure(results, [], [], argparse.Namespace(clients=[1, 8]))
    md = serve.render(results)

    assert md.count("failed: no model to serve: every training run failed") == 5  # latency, 2 loads, explain, memory


# ---- speed.py: the smallest budget at which every seed reaches 99.0% ------------------------------------------


def test_the_budget_search_leaves_a_budget_at_its_first_miss_and_stops_at_the_first_that_every_seed_passes():
    import speed

    calls = []

    def run(arm, model, seed, budget):
        calls.append((budget, seed))
        if budget == 6 and seed == 1:
            raise RuntimeError("the training loss stopped being a finite number at step 38")
        acc = {4: 0.985, 5: 0.992 if seed == 0 else 0.989, 6: 0.993, 7: 0.994}[budget]
        return {"test_acc": acc, "wall_seconds": budget + 1.5 + seed / 10}

    found = speed.budget_search("resnet", [4, 5, 6, 7, 8], 3, done := {}, lambda: None, run)
    assert calls == [(4, 0), (5, 0), (5, 1), (6, 0), (6, 1), (7, 0), (7, 1), (7, 2)]
    assert found["budget"] == 7 and [r["test_acc"] for r in found["runs"]] == [0.994] * 3
    assert done["6"][1]["failed"].startswith("RuntimeError: the training loss stopped being a finite number")
    # --resume: what is done is kept, nothing is run again
    calls.clear()
    assert speed.budget_search("resnet", [4, 5, 6, 7, 8], 3, done, lambda: None, run)["budget"] == 7 and calls == []
    results = {"machine": "test machine", "command": "python benchmarks/speed.py", "matmul": {"per_size": {2048: 100.0}, "gflops": 100.0},
               "models": {"resnet": {"budgets": done, "budget_found": found, "step_flops": 1e7,
                                     "throughput": {"course": 1000.0, "cnnlab": 3000.0},
                                     "course": [{"wall_seconds": 170.0, "time_to_99": None, "epochs": 10,
                                                 "final_test_acc": 0.988, "peak_rss_mb": 400.0}]}}}
    (row,) = speed.budget_rows(results)
    assert row["budget"] == 7 and row["wall"] == pytest.approx(8.6) and row["speedup"] == pytest.approx(170 / 8.6)
    assert row["slowest"] == pytest.approx(170 / 8.7)  # seed 2's 8.7 s: the target holds for every seed or not at all
    md = speed.render_markdown(results)
    assert "reaches 99.0% on each of 3 seeds with `--time-budget 7`, in 8.6 s from process start to exit" in md
    assert "6 s: 99.30%, failed" in md and "19.8x sooner than the course loop's 10 epochs" in md
    assert "19.5x for the slowest seed: target 20x for every seed not met" in md


def test_the_averaging_benchmark_judges_each_arm_by_its_own_validation_and_shows_both():
    def row(epoch, trained, average):  # (val, test) of each arm
        return {"epoch": epoch, "seconds": 1.0, "trained": dict(zip(("val", "test"), trained)),
                "average": dict(zip(("val", "test"), average))}

    run = {"model": "resnet_bn", "dataset": "mnist", "seed": 0, "decay": 0.999, "cpu": "x", "epochs": [
        row(1, (0.98, 0.97), (0.97, 0.96)), row(2, (0.99, 0.992), (0.995, 0.993)),
        row(3, (0.99, 0.994), (0.994, 0.999)),
    ]}
    assert averaging.chosen(run, "trained") == {"epoch": 3, "val": 0.99, "test": 0.994}  # a tie goes to the later
    assert averaging.chosen(run, "average") == {"epoch": 2, "val": 0.995, "test": 0.993}  # never the test's best
    text = averaging.render_markdown({"machine": "m", "command": "c", "runs": [run]})
    assert "| resnet_bn | 0 | 3: 99.00 / 99.40 | 2: 99.50 / 99.30 | -0.10 | 99.40 / 99.90 |" in text, text


def test_the_precision_benchmark_times_both_precisions_in_turns_and_keeps_each_cpus_rows():
    import precision

    rates = precision.measure("resnet", synthetic_mnist(train=300, test=50, seed=0), steps=2, rounds=2)
    assert set(rates) == {"float32", "bfloat16"} and all(len(r) == 2 and min(r) > 0 for r in rates.values())

    def entry(units, f32, bf16):
        return {"machine": f"{units} machine", "command": "python benchmarks/precision.py", "units": units,
                "auto": "bfloat16" if units else "float32", "steps": 40, "rounds": 3, "batch_size": 128, "lr": 1e-4,
                "models": {"resnet": {"float32": f32, "bfloat16": bf16}}}

    results = precision.merge({}, "cpu A", entry(None, [100.0, 90.0, 110.0], [80.0, 70.0, 99.0]))
    results = precision.merge(results, "cpu B", entry("AVX512_BF16", [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))
    results = precision.merge(results, "cpu B", entry("AVX512_BF16", [100.0, 100.0, 100.0], [130.0, 120.0, 150.0]))
    assert list(results["cpus"]) == ["cpu A", "cpu B"]  # B's second run replaced its first; A's rows kept
    assert precision.rows(results) == [["cpu A", "none", "float32", "resnet", 100, 80, "0.80x", "0.78..0.90x"],
                                       ["cpu B", "AVX512_BF16", "bfloat16", "resnet", 100, 130, "1.30x", "1.20..1.50x"]]
    md = precision.render_markdown(results)
    assert "| cpu B | AVX512_BF16 | bfloat16 | resnet |" in re.sub(r" +", " ", md)
    assert "- None machine: `python benchmarks/precision.py`, 3 rounds of 40 steps of 128 images" in md
    assert precision.render_markdown(_saved("precision")) == (RESULTS / "precision.md").read_text()  # as committed
