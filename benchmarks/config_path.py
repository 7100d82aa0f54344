"""How far a reader travels to follow one training run: the source files the configuration passes through from
`cnnlab train`'s entry to the finished run directory, and how often it returns to a file it had already left.

    python benchmarks/config_path.py                  # a 2-step basic_cnn run on the real MNIST
    python benchmarks/config_path.py --show           # also print the path, one call a line

It runs `cnnlab train --model basic_cnn --steps 2` in this process under a profiler (sys.setprofile) and keeps,
in the order they are first called, the functions a reader opens to follow the run: the train command's own
function, every function of the package that is handed the configuration (a call whose arguments hold the run's
TrainConfig, or an object holding it in an attribute: a run's parts, a spec), and every function of the package
that one of those calls directly (what a reader of that function must open to know what it does). A function is
counted once, at its first call, so a loop over steps or epochs does not inflate the path. From that sequence
of functions it reports:
  files     the distinct source files on the path;
  returns   how many times the path moves into a file it had already left for another one;
  lookups   how many times each registry lookup ran (a data set name, a model name) in the whole command.
Writes benchmarks/results/config_path.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ENTRIES = ("cmd_train", "run_train")  # the train command's function (cli.py, or the command's own module)
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _holds_config(value, config_type) -> bool:
    if isinstance(value, config_type):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(isinstance(getattr(value, f.name, None), config_type) for f in dataclasses.fields(value))
    return any(isinstance(v, config_type) for v in getattr(value, "__dict__", {}).values())


def trace(argv: list[str]) -> tuple[list[tuple[str, str]], Counter]:
    """(file, function) in first-call order for the functions handed the config; and the lookup counts."""
    import cnnlab
    from cnnlab import cli
    from cnnlab.config import TrainConfig

    package = str(Path(cnnlab.__file__).parent) + "/"
    seen: set = set()
    followed: set = set()  # the functions handed the config: what they call is on the path too
    path: list[tuple[str, str]] = []
    lookups: Counter = Counter()
    lookup_names = {("data/sets/registry.py", "lookup"),
                    ("models/registry.py", "get_model")}

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if not code.co_filename.startswith(package):
            return
        rel = code.co_filename[len(package):]
        if (rel, code.co_name) in lookup_names:
            lookups[f"{rel}:{code.co_name}"] += 1
        if code in seen:
            return
        args = [frame.f_locals.get(n) for n in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]]
        if code.co_name in ENTRIES or any(_holds_config(a, TrainConfig) for a in args):
            followed.add(code)
        elif frame.f_back is None or frame.f_back.f_code not in followed or code.co_name == "<module>":
            return
        seen.add(code)
        path.append((rel, code.co_qualname))

    sys.setprofile(profile)
    try:
        code = cli.main(argv)
    finally:
        sys.setprofile(None)
    if code != 0:
        raise SystemExit(f"cnnlab {' '.join(argv)} failed ({code})")
    return path, lookups


def measure(path: list[tuple[str, str]]) -> dict:
    files: list[str] = []
    returns = 0
    for rel, _ in path:
        if files and files[-1] == rel:
            continue
        if rel in files:
            returns += 1
        files.append(rel)
    visits = Counter(files)
    return {"files": len(visits), "returns": returns, "visits": dict(visits.most_common()),
            "functions": len(path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--show", action="store_true", help="print the path, one function a line")
    p.add_argument("--out", default=str(RESULTS), help="where to write config_path.json/.md (default: %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as out:
        argv = ["train", "--model", "basic_cnn", "--steps", "2", "--device", "cpu", "--out", out, "--no-progress"]
        path, lookups = trace(argv)
    m = measure(path)
    if args.show:
        for rel, fn in path:
            print(f"  {rel}:{fn}")
    lines = [
        "# Following the configuration of one `cnnlab train`",
        "",
        f"Command: `cnnlab {' '.join(argv[:-4])}` (traced by `python benchmarks/config_path.py`).",
        "",
        "| measure | count |",
        "| --- | ---: |",
        f"| source files on the path | {m['files']} |",
        f"| returns to a file already left | {m['returns']} |",
        f"| functions handed the config | {m['functions']} |",
        *(f"| calls of {k} | {v} |" for k, v in sorted(lookups.items())),
        "",
        "Visits per file: " + ", ".join(f"{k} {v}" for k, v in m["visits"].items()),
        "",
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_path.json").write_text(json.dumps({**m, "lookups": dict(lookups), "path": path}, indent=1) + "\n")
    (out / "config_path.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
