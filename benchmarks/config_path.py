"""How far a reader travels to follow one training run: the source files the configuration passes through from
`cnnlab train`'s entry to the finished run directory, and how often the reader returns to a file already left.

    python benchmarks/config_path.py                  # a 2-step basic_cnn run on the real MNIST
    python benchmarks/config_path.py --show           # also print the path, one function a line

It runs `cnnlab train --model basic_cnn --steps 2` in this process under a profiler (sys.setprofile) and keeps, in
the order they are first called:
  the config's path  the train command's own function and every function of the package handed the configuration
                     (a call whose arguments hold the run's TrainConfig, or an object holding it in an attribute or
                     an attribute's attribute: a run's spec, its parts);
  a reader's path    those, and every function of the package that one of them calls directly (what a reader of
                     that function must open to know what it does).
A function counts once, at its first call, so a loop over steps or epochs does not inflate a path. For each path:
  files     the distinct source files on it;
  returns   the calls into a file the reader had opened before and has since left: a file that is not the file
            of any call the path is still inside. Coming back from a call, or a call back into a file still open
            further up, is not a return: the reader has not left it.
And, over the whole command, how many times each registry lookup ran (a data set name, a model name).
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

# The train command's function, where the path starts; with the names of older layouts too, so that a checkout of an
# earlier commit is measured the same way (as the figures in results/config_path.md were).
ENTRIES = {("cli.py", "cmd_train"), ("cli/train.py", "run")}
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _holds_config(value, config_type, depth: int = 2) -> bool:
    """Whether `value` is the config, or holds it in an attribute (or an attribute's attribute: a run's spec)."""
    if isinstance(value, config_type):
        return True
    if depth == 0 or isinstance(value, (type, str, bytes, int, float, Path)):
        return False
    if dataclasses.is_dataclass(value):
        inner = [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    else:
        inner = list(getattr(value, "__dict__", {}).values())
    return any(_holds_config(v, config_type, depth - 1) for v in inner)


def trace(argv: list[str]) -> tuple[list[tuple[str, str, bool, bool]], Counter]:
    """(file, function, handed the config, its file already open in a caller) in first-call order for the
    functions on the path; and the registry lookups' counts."""
    import cnnlab
    from cnnlab import cli
    from cnnlab.config import TrainConfig

    package = str(Path(cnnlab.__file__).parent) + "/"
    seen: set = set()
    followed: set = set()  # the functions handed the config: what they call is on the path too
    path: list[tuple[str, str, bool]] = []
    lookups: Counter = Counter()
    lookup_names = {("data/sets/registry.py", "lookup"), ("data/registry.py", "lookup"),
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
        handed = (rel, code.co_name) in ENTRIES or any(_holds_config(a, TrainConfig) for a in args)
        if handed:
            followed.add(code)
        elif frame.f_back is None or frame.f_back.f_code not in followed or code.co_name == "<module>":
            return
        seen.add(code)
        open_files, f = set(), frame.f_back  # the files of the calls this one is inside: where the reader is
        while f is not None:
            if f.f_code.co_filename.startswith(package):
                open_files.add(f.f_code.co_filename[len(package):])
            f = f.f_back
        path.append((rel, code.co_qualname, handed, rel in open_files))

    sys.setprofile(profile)
    try:
        code = cli.main(argv)
    finally:
        sys.setprofile(None)
    if code != 0:
        raise SystemExit(f"cnnlab {' '.join(argv)} failed ({code})")
    return path, lookups


def measure(path: list[tuple[str, str, bool, bool]]) -> dict:
    """Files on the path, and returns: calls into a file the reader had opened before and has left (it is not
    the file of any call the path is still inside). A call back into an open file, and coming back from a call,
    are not returns: the reader is still in that file."""
    visited: list[str] = []
    returns = 0
    for rel, _, _, still_open in path:
        if rel in visited and not still_open:
            returns += 1
        visited.append(rel)
    visits = Counter(visited)
    return {"files": len(visits), "returns": returns, "functions": len(path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--show", action="store_true", help="print the path, one function a line (* handed the config)")
    p.add_argument("--out", default=str(RESULTS), help="where to write config_path.json/.md (default: %(default)s)")
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    from machine import describe_machine

    with tempfile.TemporaryDirectory() as out:
        argv = ["train", "--model", "basic_cnn", "--steps", "2", "--device", "cpu", "--out", out, "--no-progress"]
        path, lookups = trace(argv)
    config, reader = measure([f for f in path if f[2]]), measure(path)
    if args.show:
        for rel, fn, handed, still_open in path:
            print(f"  {'*' if handed else ' '} {rel}:{fn}")
    lines = [
        "# Following the configuration of one `cnnlab train`",
        "",
        f"Command: `cnnlab {' '.join(argv[:-3])}`, traced by `python benchmarks/config_path.py` (its docstring says",
        "how). The config's path: the functions handed the config; a reader's path: those and every function of the",
        "package they call directly.",
        "",
        "| measure | the config's path | a reader's path |",
        "| --- | ---: | ---: |",
        f"| source files | {config['files']} | {reader['files']} |",
        f"| returns to a file already left | {config['returns']} | {reader['returns']} |",
        f"| functions | {config['functions']} | {reader['functions']} |",
        "",
        f"Machine: {describe_machine()} (the counts do not depend on it).",
        "",
        "Registry lookups in the whole command: " + ", ".join(f"{k} {v}" for k, v in sorted(lookups.items())),
        "",
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"config_path": config, "reader_path": reader, "lookups": dict(lookups), "path": path}
    (out / "config_path.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "config_path.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
