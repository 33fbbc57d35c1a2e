"""The docs check: every shell command in the fenced bash/sh blocks of README.md and docs/*.md is classified and
checked, so a command that fails as written fails here, and the README's results table is the generated one.

- `dvc exp run -S ...`: DVC's own argument parser, then the -S overrides applied to params.yaml (or to the
  config a preceding `cp X params.yaml` installs) with DVC's own Hydra code, then the result validated by
  textwsss.params; the targets must be stages of dvc.yaml. Other dvc commands go through DVC's parser.
- `textwsss predict|evaluate`: the real parser, then run on a tiny checkpoint with the paths replaced.
- `python benchmarks/X.py` / `python scripts/X.py`: the script exists and defines every flag used (read from
  its argparse calls: importing some of them costs 20-40 s; another test runs each script's quick mode).
- `bash X.sh`: the script exists and parses (`bash -n`).
- Long commands (`dvc repro`, set-up, the test suite) are not executed; a command of no known kind fails.
"""
from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|"}


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def fenced_blocks(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line of the opening fence, info string, body lines) of every ``` block."""
    blocks, current = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current = (n, line[3:].strip(), [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[2].append(line)
    if current is not None:
        raise AssertionError(f"{path}:{current[0]}: a ``` block that is never closed")
    return blocks


def commands(path: Path) -> list[Command]:
    out = []
    for start, info, body in fenced_blocks(path):
        if info.split()[0:1] and info.split()[0] in SHELL_LANGS:
            pending, first = "", None
            for n, line in enumerate(body, start + 1):
                if not line.strip() and not pending:
                    continue
                first = first or n
                if line.rstrip().endswith("\\"):  # a continued line
                    pending += line.rstrip()[:-1] + " "
                    continue
                out.append(Command(str(path.relative_to(ROOT)), first, (pending + line).strip()))
                pending, first = "", None
    return out


def tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def segments(text: str) -> list[list[str]]:
    """The simple commands of a command line, split at && || ; | (comments dropped)."""
    out, current = [], []
    for tok in tokens(text):
        if tok in OPERATORS:
            out.append(current)
            current = []
        else:
            current.append(tok)
    out.append(current)
    if any(not seg for seg in out):
        raise AssertionError(f"an empty command in {text!r}")
    return out


ALL = [c for doc in DOCS for c in commands(doc)]


def inline_experiments(path: Path) -> list[Command]:
    """The complete `dvc exp run ...` of the prose and tables (no ... and no NAME-style placeholder)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        for span in re.findall(r"`(dvc exp run [^`]+)`", line):
            if "..." not in span and not re.search(r"[=\s][A-Z]+(\s|$)", span) and not span.endswith("-S"):
                out.append(Command(str(path.relative_to(ROOT)), n, span))
    return out


INLINE = [c for doc in DOCS for c in inline_experiments(doc)]


# ---------------------------------------------------------------- dvc

def stage_names() -> set[str]:
    return set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def dvc_args(argv: list[str]):
    """DVC's own parser: an unknown flag or subcommand is an error, as it is for the user."""
    from dvc.cli import DvcParserError, parse_args

    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            return parse_args(argv)
    except (DvcParserError, SystemExit) as e:
        raise AssertionError(f"`dvc {' '.join(argv)}` is rejected by DVC's parser:\n{sink.getvalue()[-600:]}") from e


def apply_set_params(params_file: Path, set_params: list[str], tmp: Path) -> dict:
    """params.yaml after `-S` as `dvc exp run` applies them (DVC's code, Hydra's override grammar)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    target = tmp / "params.yaml"
    shutil.copy(params_file, target)
    for path, overrides in to_path_overrides(set_params).items():
        if path != "params.yaml":
            raise AssertionError(f"-S names the params file {path!r}: this project has only params.yaml")
        try:
            apply_overrides(target, overrides)
        except InvalidArgumentError as e:
            raise AssertionError(f"DVC refuses {overrides}: {e.__cause__ or e}") from e
    return yaml.safe_load(target.read_text())


def check_dvc(argv: list[str], ctx: dict, tmp: Path) -> str:
    from textwsss.params import ParamsError, parse_params

    args = dvc_args(argv)
    unknown = [t.rpartition(":")[2] for t in getattr(args, "targets", None) or []
               if t.rpartition(":")[2] not in stage_names()]
    assert not unknown, f"not stages of dvc.yaml: {unknown}"
    if argv[:2] in (["exp", "run"], ["experiments", "run"]) or argv[:1] == ["repro"]:
        base = ctx.get("params", ROOT / "params.yaml")
        raw = apply_set_params(base, getattr(args, "set_param", None) or [], tmp)
        try:
            parse_params(raw, source=f"{base.name} with {args.set_param}" if getattr(args, "set_param", None)
                         else base.name)
        except ParamsError as e:
            raise AssertionError(str(e)) from e
        return "dvc run: overrides applied and validated, not executed (long)"
    return "dvc: parsed, not executed"


def check_cp(argv: list[str], ctx: dict) -> str:
    from textwsss.params import parse_params

    assert len(argv) == 2 and argv[1] == "params.yaml", f"only `cp <profile> params.yaml` is known, not {argv}"
    source = ROOT / argv[0]
    assert source.is_file(), f"{argv[0]} does not exist"
    parse_params(yaml.safe_load(source.read_text()), source=argv[0])
    ctx["params"] = source  # what the rest of the line runs on
    return "profile validated, not copied"


# ---------------------------------------------------------------- scripts

def _option_strings(path: Path, seen: set[Path]) -> dict[str, list | None]:
    """Every option an argparse parser of the script (or of a module beside it that it imports) defines,
    with its literal choices if it has them."""
    if path in seen or not path.is_file():
        return {}
    seen.add(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    options: dict[str, list | None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            choices = next((kw.value for kw in node.keywords if kw.arg == "choices"), None)
            try:
                choices = ast.literal_eval(choices) if choices is not None else None
            except ValueError:
                choices = None  # computed choices: not checked
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    options[arg.value] = list(choices) if choices is not None else None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            options.update(_option_strings(path.parent / f"{node.module}.py", seen))
    return options


def check_python_script(argv: list[str]) -> str:
    script = ROOT / argv[0]
    assert script.is_file(), f"{argv[0]} does not exist"
    options = _option_strings(script, set())
    for i, tok in enumerate(argv[1:], 1):
        if not tok.startswith("--"):
            continue
        flag = tok.split("=", 1)[0]
        assert flag in options, f"{argv[0]} has no option {flag} (it has {sorted(options)})"
        choices = options[flag]
        if choices is not None:
            values = [tok.split("=", 1)[1]] if "=" in tok else []
            for value in argv[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
            bad = [v for v in values if v not in map(str, choices)]
            assert not bad, f"{argv[0]} {flag}: {bad} not among {choices}"
    return "script and flags exist"


def check_bash_script(argv: list[str]) -> str:
    script = ROOT / argv[0]
    assert script.is_file(), f"{argv[0]} does not exist"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, f"bash -n {argv[0]}: {result.stderr}"
    return "shell script exists and parses"


# ---------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A segmentation checkpoint per class list (untrained: the commands are checked, not the scores) and a
    synthetic VOC root."""
    import torch

    from textwsss.data.classes import COCO, VOC
    from textwsss.models.checkpoints import save_model
    from textwsss.models.factory import build_deeplab
    from textwsss.synthetic import write_voc_root

    tmp = tmp_path_factory.mktemp("docs-cli")
    torch.manual_seed(0)
    ckpts = {}
    for name, classes in (("voc", VOC), ("coco", COCO)):
        model = build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=classes.num_labels).eval()
        ckpts[name] = tmp / f"{name}.pt"
        save_model(ckpts[name], model, classes, stage="test")
    write_voc_root(tmp / "voc", train=2, val=2, seed=1, size=64, num_classes=3)
    return {"tmp": tmp, "ckpt": ckpts, "voc": tmp / "voc"}


def _coco_root(root: Path, split: str) -> Path:
    """One 64 x 48 image of `split` with a person polygon, in COCO's file layout."""
    from PIL import Image

    from layout_builders import COCO_IDS
    from textwsss.data.classes import COCO_NAMES

    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(root / split / f"COCO_{split}_000000001000.jpg")
    person = COCO_IDS[COCO_NAMES.index("person")]
    annotations = {
        "images": [{"id": 1000, "file_name": f"COCO_{split}_000000001000.jpg", "height": 48, "width": 64}],
        "annotations": [{"id": 1, "image_id": 1000, "category_id": person, "iscrowd": 0, "area": 600.0,
                         "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]], "bbox": [10, 10, 30, 20]}],
        "categories": [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, COCO_NAMES)]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(annotations))
    return root


def _dataset_root(layout: str, split: str, tiny: dict, tmp: Path) -> Path:
    if layout == "voc":
        return tiny["voc"]
    if layout == "coco":
        return _coco_root(tmp / "coco", split)
    raise AssertionError(f"the docs check has no tiny {layout} root: add one to tests/test_docs.py")


def run_textwsss(argv: list[str], get_tiny, tmp: Path) -> str:
    """Parse with the real parser, substitute the paths, run it in-process."""
    from PIL import Image

    from textwsss.cli import build_parser, main

    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"`textwsss {' '.join(argv)}` is rejected by its parser:\n{sink.getvalue()}") from e
    tiny = get_tiny()
    layout = getattr(args, "layout", "voc")
    swap = {args.checkpoint: str(tiny["ckpt"]["coco" if layout == "coco" else "voc"]),
            args.out: str(tmp / "out" / Path(args.out).name)}
    if args.command == "evaluate":
        swap[args.root] = str(_dataset_root(layout, args.split, tiny, tmp))
    else:
        rng = __import__("numpy").random.default_rng(0)
        for n, item in enumerate(args.inputs):
            target = tmp / "inputs" / f"{n}_{Path(item).name or 'folder'}"
            files = [target] if Path(item).suffix else [target / "a.jpg", target / "sub" / "b.png"]
            for f in files:
                f.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype="uint8")).save(f)
            swap[item] = str(target)
    if getattr(args, "params", None):
        assert (ROOT / args.params).is_file(), f"--params {args.params} does not exist"
        swap[args.params] = str(ROOT / args.params)
    new_argv = [swap.get(tok, tok) for tok in argv]
    assert main(new_argv) == 0, f"textwsss {' '.join(new_argv)} failed"
    out = Path(swap[args.out])
    if args.command == "evaluate":
        assert "miou" in json.loads(out.read_text())
    else:
        assert sorted(out.glob("*.png")), f"predict wrote no label PNG into {out}"
    return "CLI run on a tiny checkpoint"


# ---------------------------------------------------------------- classification

ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")
NOT_RUN = {  # long or machine-changing; each still named here so a new kind of command is a decision
    ("bash", "scripts/setup.sh"): "set-up (minutes; CI runs it)",
    ("git", "clone"): "git clone of a remote",
}


INFORMATIONAL = {"lscpu", "nproc", "nvidia-smi", "free"}


def classify(argv: list[str], ctx: dict, tiny, tmp: Path) -> str:
    while argv and ENV.match(argv[0]):
        argv = argv[1:]
    if argv[:2] == ["/usr/bin/time", "-v"]:
        argv = argv[2:]
    head = argv[0]
    if tuple(argv[:2]) in NOT_RUN:
        if argv[0] == "bash":
            check_bash_script(argv[1:])
        return NOT_RUN[tuple(argv[:2])]
    if head in INFORMATIONAL:
        return "prints facts about the machine: not needed here"
    if head in (".", "source"):
        assert argv[1:] == [".venv/bin/activate"], f"only the project's venv is sourced, not {argv[1:]}"
        return "activates the venv"
    if head == "dvc":
        return check_dvc(argv[1:], ctx, tmp)
    if head == "cp":
        return check_cp(argv[1:], ctx)
    if head == "textwsss":
        return run_textwsss(argv[1:], tiny, tmp)
    if head in ("python", ".venv/bin/python"):
        if argv[1:3] == ["-m", "pytest"]:
            return "the test suite: not executed"
        if argv[1:3] == ["-m", "textwsss"] or argv[1:3] == ["-m", "textwsss.cli"]:
            return run_textwsss(argv[3:], tiny, tmp)
        if argv[1].startswith(("benchmarks/", "scripts/")) and argv[1].endswith(".py"):
            return check_python_script(argv[1:])
    if head == "bash" and argv[1].startswith(("benchmarks/", "scripts/")) and argv[1].endswith(".sh"):
        return check_bash_script(argv[1:])
    raise AssertionError(f"the docs check does not know this kind of command: {' '.join(argv)!r}; "
                         "teach tests/test_docs.py's classify() how to check it")


def check_line(text: str, tiny, tmp: Path) -> list[str]:
    ctx: dict = {}
    return [classify(seg, ctx, tiny, tmp) for seg in segments(text)]


# ---------------------------------------------------------------- tests

def test_the_docs_have_commands():
    files = {c.file for c in ALL}
    assert "README.md" in files and len(ALL) >= 10, [str(c) for c in ALL]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fenced_block_names_its_language(doc):
    """An unlabelled block of commands would escape the check."""
    unlabelled = [n for n, info, _ in fenced_blocks(doc) if not info]
    assert not unlabelled, f"{doc.name}: fenced blocks without a language (```bash, ```text) at lines {unlabelled}"


@pytest.mark.parametrize("command", ALL, ids=lambda c: f"{c.file}:{c.line}")
def test_docs_command(command, request, tmp_path):
    try:
        check_line(command.text, lambda: request.getfixturevalue("tiny"), tmp_path)
    except AssertionError as e:
        raise AssertionError(f"{command}\n{e}") from None


@pytest.mark.parametrize("command", INLINE, ids=lambda c: f"{c.file}:{c.line}:{c.text[12:40]}")
def test_inline_experiment(command, tmp_path):
    try:
        check_line(command.text, None, tmp_path)
    except AssertionError as e:
        raise AssertionError(f"{command}\n{e}") from None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    """A moved or renamed page (or figure) breaks a link here rather than for a reader."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    broken = [link for link in links if "://" not in link and not (doc.parent / link).exists()]
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing files {broken}"


def test_the_published_broken_override_is_caught(tmp_path):
    """The tags example as it once was: DVC stops with "Key 'kiwi' is not in struct"; the `+` form works."""
    tags = "dvc exp run -S data.layout=tags -S data.root=/data/my_tags"
    with pytest.raises(AssertionError, match="clims.synonyms"):
        check_line(tags + " -S 'clims.synonyms={kiwi: [Granny Smith]}'", None, tmp_path)
    check_line(tags + " -S '+clims.synonyms.kiwi=[Granny Smith]'", None, tmp_path)
    raw = apply_set_params(ROOT / "params.yaml", ["+clims.synonyms.kiwi=[Granny Smith]"], tmp_path)
    assert raw["clims"]["synonyms"] == {"kiwi": ["Granny Smith"]}


@pytest.mark.parametrize("line, message", [
    ("dvc exp run -S train_cam.no_such_key=1", "no_such_key"),           # Hydra: not in params.yaml
    ("dvc exp run -S train_cam.lr=fast", "train_cam.lr"),                 # textwsss.params: not a number
    ("dvc exp run -S seed=1 no_such_stage", "no_such_stage"),             # not a stage of dvc.yaml
    ("dvc exp run --no-such-flag", "DVC's parser"),
    ("cp configs/missing.yaml params.yaml && dvc repro", "configs/missing.yaml"),
    ("python scripts/seg_recipe_study.py --no-such-flag", "--no-such-flag"),
    ("python scripts/no_such_script.py", "does not exist"),
    ("make all", "does not know"),
    ("rm -rf data", "does not know"),
])
def test_the_check_rejects_what_fails_as_written(line, message, tmp_path):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_line(line, None, tmp_path)


def test_the_check_rejects_an_unknown_cli_flag(tmp_path):
    with pytest.raises(AssertionError, match="rejected by its parser"):
        check_line("textwsss predict --checkpoint m.pt x.jpg --out o/ --no-such-flag", None, tmp_path)


def test_overrides_apply_to_the_profile_a_cp_installs(tmp_path):
    """`cp profile params.yaml && dvc exp run -S k=v` checks k against the profile, not the committed params."""
    profile = yaml.safe_load((ROOT / "configs" / "voc2012_gpu.yaml").read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert profile["data"]["layout"] != committed["data"]["layout"]
    ctx: dict = {}
    check_cp(["configs/voc2012_gpu.yaml", "params.yaml"], ctx)
    raw = apply_set_params(ctx["params"], ["seed=3"], tmp_path)
    assert raw["seed"] == 3 and raw["data"]["layout"] == profile["data"]["layout"]


def test_shell_lines_split_at_operators_and_drop_comments():
    assert segments("a -S 'x={k: [A B]}' && b c   # note && more") == [["a", "-S", "x={k: [A B]}"], ["b", "c"]]
    assert segments("A=1 b; c | d") == [["A=1", "b"], ["c"], ["d"]]


# ---------------------------------------------------------------- the results table

def _results_table():
    if "results_table" not in sys.modules:  # its dataclasses look their module up there
        spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["results_table"] = module
        spec.loader.exec_module(module)
    return sys.modules["results_table"]


def test_readme_results_table_is_the_generated_one():
    """A metrics change with a stale table fails here: `python scripts/results_table.py --write` fixes it."""
    rt = _results_table()
    _, block, _ = rt.split_readme((ROOT / "README.md").read_text(), ROOT / "README.md")
    assert block == rt.render(ROOT), "README.md's results table is stale: python scripts/results_table.py --write"


def test_the_results_table_is_on_the_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    rt = _results_table()
    assert lines.index(rt.START) < 45 and any("dvc repro" in line for line in lines[:8])


def _fake_root(tmp: Path, seg_miou: float) -> Path:
    """A repository root with hand-set metrics and seed studies."""
    metrics = {
        "cam": {"miou": 40.0, "threshold": 0.35, "n_images": 7},
        "pseudo_labels": {"miou": 50.0, "miou_all_pixels": 45.0, "pixel_acc": 80.0, "ignore_ratio": 0.25},
        "seg": {"miou": seg_miou, "pixel_acc": 70.0, "n_images": 5, "ungated": {"miou": 20.0, "pixel_acc": 60.0}},
        "zeroshot": {"miou": 33.33, "label_free": None},
        "tas": {"miou": 10.0, "oiou": 12.0, "n": 9},
    }
    (tmp / "reports" / "metrics").mkdir(parents=True)
    (tmp / "reports" / "studies").mkdir()
    for stem, value in metrics.items():
        (tmp / "reports" / "metrics" / f"{stem}.json").write_text(json.dumps(value))
    seeds = {"cpu": "test CPU", "seeds": [0, 1, 2], "metrics": {
        "cam.miou": {"values": [40.0, 30.0, 50.0]},
        "tas.miou": {"values": [10.0, 11.0, 15.0], "mean": 12.5, "spread": 5.5},  # published summary wins
    }}
    (tmp / "reports" / "studies" / "seeds.json").write_text(json.dumps(seeds))
    study = [{"recipe": "seg-pseudo-default", "seeds": [0, 1, 2, 3], "miou": [30.0, 20.0, 40.0, 99.0],
              "miou_alone": [20.0, 21.0, 26.0, 99.0], "pixel_acc": [70.0, 71.0, 72.0, 99.0]}]
    (tmp / "reports" / "studies" / "seg_recipe_demo.json").write_text(json.dumps(study))
    return tmp


def _row(table: str, stage: str) -> list[str]:
    return next(line for line in table.splitlines() if line.startswith(f"| {stage} |")).split(" | ")


def test_results_table_cells_by_hand(tmp_path):
    rt = _results_table()
    table = rt.render(_fake_root(tmp_path, seg_miou=30.0))
    assert _row(table, "eval_cam")[3:5] == ["40.0 (0.35)", "40.0 / 30.0 / 50.0: 40.0 (20.0) |"]
    assert _row(table, "pseudo_labels")[3] == "50.0 (80.0; 25.0%)"
    assert _row(table, "pseudo_labels, every pixel")[4] == "– |"  # no seed record: a dash, not a crash
    # seeds 0-2 of the study's default row (seed 3 is not in the table): mean 30.0, spread 20.0
    assert _row(table, "eval_seg")[4] == "30.0 / 20.0 / 40.0: 30.0 (20.0); pixel acc 70.0 / 71.0 / 72.0 |"
    assert _row(table, "eval_seg, network alone")[4] == "20.0 / 21.0 / 26.0: 22.3 (6.0) |"  # no pixel acc record
    assert _row(table, "tas")[3:5] == ["10.0 / 12.0", "10.0 / 11.0 / 15.0: 12.5 (5.5) |"]
    assert _row(table, "zeroshot, label-free")[3] == "**–** (–)"
    note = " ".join(table.split())  # the note is wrapped
    assert "on 7 train images" in note and "on 5 val images" in note and "on 9 expressions" in note
    assert "Every column was measured on the same CPU: test CPU." in note


def test_a_rerun_demo_is_flagged_not_mixed_silently(tmp_path):
    """New seed-0 metrics (another CPU): the table shows them and says the seed columns are the older study."""
    rt = _results_table()
    table = rt.render(_fake_root(tmp_path, seg_miou=31.0))
    assert _row(table, "eval_seg")[3] == "**31.0** (70.0)"
    assert _row(table, "eval_seg")[4].startswith("30.0 / 20.0 / 40.0: 30.0 (20.0)")
    assert "later run than the seed study (CPU: not recorded; it differs in seg.miou)" in " ".join(table.split())
    rt.record_run("the new CPU", tmp_path)
    assert "(CPU: the new CPU; it differs in seg.miou)" in " ".join(rt.render(tmp_path).split())


def test_check_fails_on_a_stale_readme_and_write_fixes_it(tmp_path, capsys):
    rt = _results_table()
    root = _fake_root(tmp_path, seg_miou=30.0)
    readme = root / "README.md"
    readme.write_text(f"# x\n\n{rt.render(root)}\n\nmore\n")
    assert rt.check(readme, root) == 0
    (root / "reports" / "metrics" / "seg.json").write_text(json.dumps(
        {"miou": 35.0, "pixel_acc": 70.0, "n_images": 5, "ungated": {"miou": 20.0, "pixel_acc": 60.0}}))
    assert rt.check(readme, root) == 1
    assert "+| eval_seg |" in capsys.readouterr().out
    assert rt.write(readme, root) == 0 and rt.check(readme, root) == 0
    assert readme.read_text().startswith("# x\n\n") and readme.read_text().endswith("\n\nmore\n")
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="results-table:start"):
        rt.check(readme, root)
