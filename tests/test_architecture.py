"""docs/architecture.md is the map, and these tests keep it true: it names every source file and no file that is
gone, every import of every module goes down its diagram, and one `cnnlab train` looks each name up once."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnlab"
MAP = ROOT / "docs" / "architecture.md"


def _source_files() -> set[str]:
    files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    files |= {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "serve" / "static").iterdir() if p.is_file()}
    # a sub-package's __init__ holds only its docstring and re-exports; the package's own is the API and is named
    return {f for f in files if not (f.endswith("/__init__.py") and f != "cli/__init__.py")}


def _named_in_map() -> set[str]:
    text = MAP.read_text(encoding="utf-8")
    table = text.split("## Every file", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))


def test_the_map_names_every_source_file_and_only_files_that_exist():
    files, named = _source_files(), _named_in_map()
    assert not files - named, f"missing from docs/architecture.md's 'Every file': {sorted(files - named)}"
    assert not named - files, f"named in docs/architecture.md but not in src/cnnlab: {sorted(named - files)}"


def _layers() -> list[set[str]]:
    """The diagram's lines, top first: each a set of rooms ('train/', 'config.py')."""
    block = MAP.read_text(encoding="utf-8").split("```", 2)[1]
    layers = []
    for line in block.strip().splitlines():
        rooms = set(re.findall(r"(?:^|\s)([a-z_]+/|[a-z_]+\.py)(?=\s|$)", line.split("  " * 4)[0]))
        if rooms:
            layers.append(rooms)
    return layers


def _room(module: str) -> str:
    """The room of a module: its sub-package ('train/') or its top-level file ('config.py')."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] + "/" if (PACKAGE / parts[1]).is_dir() else parts[1] + ".py"


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported cnnlab module, line) for every import that runs: at the top, in a function, in a try; not those
    under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".")[: -node.level if not path.name == "__init__.py" else len(module.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names if (PACKAGE.parent / f"{name}.{a.name}".replace(".", "/")).exists()]
    return [(m, line) for m, line in found if m == "cnnlab" or m.startswith("cnnlab.")]


def test_every_import_goes_down_the_diagram():
    layers = _layers()
    level = {room: i for i, rooms in enumerate(layers) for room in rooms}
    rooms = {_room("cnnlab." + p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(level), f"rooms missing from the diagram: {sorted(rooms - set(level))}"
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = "cnnlab." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        module = module.removesuffix(".__init__")
        here = _room(module)
        for imported, line in _imports(path, module):
            there = _room(imported)
            if there != here and level[there] <= level[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {imported} ({there})")
    assert not wrong, "imports that do not go down docs/architecture.md's diagram:\n" + "\n".join(wrong)


def test_data_sets_fetch_and_tensors_are_layered():
    order = {"sets": 0, "fetch": 1, "tensors": 2}
    wrong = []
    for path in (PACKAGE / "data").rglob("*.py"):
        rel = path.relative_to(PACKAGE / "data").parts
        if len(rel) < 2:
            continue
        module = "cnnlab.data." + ".".join(rel).removesuffix(".py")
        for imported, line in _imports(path, module):
            parts = imported.split(".")
            if len(parts) > 2 and parts[1] == "data" and parts[2] in order and parts[2] != rel[0]:
                if order[parts[2]] < order[rel[0]]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_diagram_check_catches_an_import_that_goes_up(tmp_path, monkeypatch):
    """The check itself can fail: a module of a low room that imports a higher one is reported."""
    layers = _layers()
    level = {room: i for i, rooms in enumerate(layers) for room in rooms}
    assert level["errors.py"] > level["train/"] > level["cli/"]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cnnlab.train.run import fit\n")
    (imported, line), = _imports(bad, "cnnlab.errors")
    assert (_room(imported), line) == ("train/", 2) and level[_room(imported)] < level["errors.py"]


@pytest.mark.real_data
def test_one_train_looks_each_name_up_once(tmp_path):
    """Counted on a real `cnnlab train` (2 steps on MNIST) with the benchmark that follows its configuration."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from config_path import trace
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    _, lookups = trace(["train", "--model", "basic_cnn", "--steps", "2", "--device", "cpu", "--out", str(tmp_path),
                        "--no-progress"])
    assert lookups == {"data/sets/registry.py:lookup": 1, "models/registry.py:get_model": 1}
