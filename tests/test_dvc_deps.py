"""dvc.yaml names every textwsss file a stage's code imports: otherwise a change to that file leaves `dvc status`
clean and the stage's outputs stale (make_cam and pseudo_labels read data/filecache.py without listing it).

The import graph is read from the source (ast), not by importing: every `import` and `from ... import` of a
stage's files, function-local ones too (a lazy import runs when the stage needs it), followed transitively
through textwsss. The stage's files are stages/<stage>.py, what it imports from stages/ (_common.py), and
src/textwsss/pipeline/<stage>.py, which _common.py imports by name at run time."""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES_DIR = ROOT / "stages"


def _passes_nproc_key(stage: str) -> bool:
    return "nproc_key=" in (STAGES_DIR / f"{stage}.py").read_text()


#: Functions whose local imports run for some stages only, by (file, function): which stages run them. The
#: closure of any other stage leaves those imports out (they would list deps whose change cannot alter it).
CONDITIONAL = {
    # the torchrun relaunch: only for a stage script that passes the params section with nproc_per_node
    ("stages/_common.py", "run_stage"): _passes_nproc_key,
    # CRIS (on the guide's open_clip towers) is built only for a segmentation checkpoint of seg.model cris
    ("src/textwsss/models/factory.py", "build_cris"): lambda stage: stage in {"train_seg", "eval_seg", "tas"},
    # IRN's relation network: built by the IRN stages only
    ("src/textwsss/models/factory.py", "build_boundary_net"): lambda stage: stage in {"train_irn", "random_walk"},
}


def _stage_names() -> list[str]:
    return sorted(p.stem for p in STAGES_DIR.glob("*.py") if not p.stem.startswith("_"))


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(dotted: str) -> Path | None:
    """The file of a textwsss module or package (its __init__.py), or None when there is none."""
    base = SRC.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _package_of(path: Path) -> str:
    """The dotted package a file below src/ lives in (for a package's __init__.py: the package itself)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@dataclass
class Source:
    """What one file imports: at import time (`eager`), and inside each function by the function's name
    (`lazy`: runs only when the function does), and every name it uses (to tell which functions are called)."""
    eager: set[Path] = field(default_factory=set)
    lazy: dict[str, set[Path]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)


def _resolve(path: Path, node: ast.Import | ast.ImportFrom) -> set[Path]:
    """The textwsss files (and stages/ helpers) one import statement of `path` runs."""
    in_src = SRC in path.parents
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: only inside the package
            assert in_src, f"{path}: relative import outside src/"
            package = _package_of(path).split(".")
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
            if not in_src and (STAGES_DIR / f"{base}.py").is_file():  # stages/_common.py
                return {STAGES_DIR / f"{base}.py"}
        # `from pkg import mod`: a submodule when such a file exists
        modules = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
    # only the module named: the __init__.py of the packages above it runs too, but when only their
    # re-exports are defined there, nothing of it is used unless a file imports the package itself
    return {f for f in map(_module_file, [m for m in modules if m.split(".")[0] == "textwsss"]) if f is not None}


def _read(path: Path) -> Source:
    out = Source()

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:  # the `if TYPE_CHECKING:` body never runs
                visit(child, function)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            (out.eager if function is None else out.lazy.setdefault(function, set())).update(_resolve(path, node))
        elif isinstance(node, ast.Name):
            out.names.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.names.add(node.attr)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(), filename=str(path)), None)
    return out


def import_closure(stage: str) -> set[Path]:
    """Every file the stage's code may run: its scripts and, transitively, every textwsss module they import.
    A function-local import counts once some reached file uses the function's name (a call by name or as an
    attribute; a same-named other function may add a file too many, never one too few of the named ones)."""
    start = {STAGES_DIR / f"{stage}.py", SRC / "textwsss" / "pipeline" / f"{stage}.py"}
    sources: dict[Path, Source] = {}
    reached = set(start)
    while True:
        for path in reached - set(sources):
            sources[path] = _read(path)
        names = set().union(*(s.names for s in sources.values()))
        more = set()
        for path, source in sources.items():
            more |= source.eager
            for function, files in source.lazy.items():
                runs = CONDITIONAL.get((path.relative_to(ROOT).as_posix(), function), lambda _: True)
                if function in names and runs(stage):
                    more |= files
        if more <= reached:
            return reached
        reached |= more


def _has_code(path: Path) -> bool:
    """False for a file that is empty or only a docstring (an __init__.py that only marks a package)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def uncovered(stage: str, deps: list[str]) -> list[str]:
    """The stage's imported files that no dep path (a file or a folder above it) covers."""
    dep_paths = [(ROOT / d).resolve() for d in deps]
    missing = []
    for path in sorted(import_closure(stage)):
        if not _has_code(path):
            continue
        if not any(path == d or d in path.parents for d in dep_paths):
            missing.append(path.relative_to(ROOT).as_posix())
    return missing


TREE = {  # a made-up project: which of its files stage alpha runs is known by reading it
    "stages/_common.py": "import importlib\nfrom textwsss.params import X\n\n\ndef run_stage(stage, nproc_key=None):\n"
                         "    if nproc_key is not None:\n        from textwsss.launch import relaunch\n",
    "stages/alpha.py": "from _common import run_stage\n\nrun_stage('alpha')\n",
    "stages/beta.py": "from _common import run_stage\n\nrun_stage('beta', nproc_key='beta')\n",
    "src/textwsss/__init__.py": "",
    "src/textwsss/params.py": "X = 1\n",
    "src/textwsss/launch.py": "def relaunch():\n    pass\n",
    "src/textwsss/pkg/__init__.py": "from .reexported import R\n",
    "src/textwsss/pkg/reexported.py": "R = 1\n",
    "src/textwsss/pkg/used.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..never import N\n\n\n"
                                "def helper():\n    from ..lazy_used import L\n\n\n"
                                "def unused():\n    from ..lazy_unused import U\n",
    "src/textwsss/lazy_used.py": "L = 1\n",
    "src/textwsss/lazy_unused.py": "U = 1\n",
    "src/textwsss/never.py": "N = 1\n",
    "src/textwsss/pipeline/__init__.py": '"""Only a docstring."""\n',
    "src/textwsss/pipeline/alpha.py": "import numpy\n\nfrom ..pkg.used import helper\n\n\n"
                                      "def run(params, ws):\n    helper()\n",
    "src/textwsss/pipeline/beta.py": "def run(params, ws):\n    pass\n",
}


@pytest.fixture()
def made_up(tmp_path, monkeypatch):
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    monkeypatch.setattr(sys.modules[__name__], "STAGES_DIR", tmp_path / "stages")
    return tmp_path


def test_the_closure_follows_what_runs_and_leaves_out_what_cannot(made_up):
    closure = {p.relative_to(made_up).as_posix() for p in import_closure("alpha")}
    # runs: the scripts, the stage module, a lazy import of a function that is called; not: a lazy import of
    # an uncalled function, a TYPE_CHECKING import, a package's re-exports, the torchrun relaunch (no
    # nproc_key), other packages (numpy)
    assert closure == {"stages/alpha.py", "stages/_common.py", "src/textwsss/params.py",
                       "src/textwsss/pipeline/alpha.py", "src/textwsss/pkg/used.py", "src/textwsss/lazy_used.py"}
    assert "src/textwsss/launch.py" in {p.relative_to(made_up).as_posix() for p in import_closure("beta")}


def test_a_dep_folder_covers_its_files_and_a_docstring_file_needs_none(made_up):
    deps = ["stages/alpha.py", "stages/_common.py", "src/textwsss/pipeline", "src/textwsss/params.py",
            "src/textwsss/pkg"]
    assert uncovered("alpha", deps) == ["src/textwsss/lazy_used.py"]
    assert uncovered("alpha", deps + ["src/textwsss/lazy_used.py"]) == []
    assert uncovered("alpha", ["stages", "src"]) == []


@pytest.mark.parametrize("stage", _stage_names())
def test_every_imported_file_is_a_dep_of_the_stage(stage):
    stages = _dvc_stages()
    if stage not in stages:
        pytest.fail(f"stages/{stage}.py has no stage in dvc.yaml")
    missing = uncovered(stage, stages[stage].get("deps", []))
    assert not missing, f"dvc.yaml stage {stage} does not list these files its code imports: {missing}"

