"""Mutation check of the core modules: mutmut puts one small bug at a time into a copy of the library and runs
the module's own fast tests against it; a mutant no test notices is a bug the suite would let through.

    python scripts/mutation.py [MODULE ...] [--jobs 1] [--budget-min M] [--resume] [--recheck] [--render] [--quick]

MODULE is a key of MODULES below (all of them by default). Each module runs in its own folder mutants/<key>/
(git-ignored; a copy of src/, tests/ and the configs, with ../shared linked beside it so that the voc-mini tests
run) with its own test selection, and its section of reports/studies/mutation.md is replaced: mutants total /
killed / survived / equivalent, the score (killed / behaviour-changing mutants), the command, the wall time,
the CPU, and every survivor with its diff and a verdict from VERDICTS (equivalent: why; or left: why).
Log calls and docstrings are never mutated (pyproject.toml [tool.mutmut]). Not in CI: minutes per module.
`--budget-min M` stops each module after M minutes (the rest is reported as not checked); `--resume` goes on
from where a module's last run stopped; `--recheck` reruns only the last run's survivors (after tests were
added; the module's source unchanged, so every other verdict stands); `--render` only rewrites the report from
the last runs (after editing VERDICTS). `--quick` checks one small function against one test and writes
mutants/quick.md (seconds).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
REPORT = ROOT / "reports" / "studies" / "mutation.md"
COPIED = ("src", "tests", "pyproject.toml", "params.yaml", "configs")
TARGET = 0.85
log = logging.getLogger("mutation")


@dataclass(frozen=True)
class Module:
    key: str
    sources: tuple[str, ...]  # files mutated, relative to the repository
    tests: tuple[str, ...]  # pytest arguments selecting this module's own fast tests
    functions: tuple[str, ...] = ("*",)  # globs of the mutant names counted (the functions under check)


MODULES = {m.key: m for m in [
    Module("metrics", ("src/textwsss/metrics.py",), ("tests/test_metrics.py",)),
    Module("zeroshot.presence", ("src/textwsss/zeroshot/presence.py",),
           ("tests/test_zeroshot.py", "-k", "presence or label_free or stand_in")),
    Module("zeroshot.class_gate", ("src/textwsss/zeroshot/class_gate.py",), ("tests/test_class_gate.py",)),
    Module("losses.clims", ("src/textwsss/losses/clims.py",), ("tests/test_clims_losses.py",)),
    Module("losses.segmentation", ("src/textwsss/losses/segmentation.py",),
           ("tests/test_seg_learning.py", "tests/test_segmentation_loss_values.py", "-k", "not learns")),
    # the validators only: the section models are declarations, checked by pydantic itself
    Module("params", ("src/textwsss/params.py",), ("tests/test_params.py",),
           ("*ǁ_class_names__*", "*ǁ_has_slot__*", "*ǁcheck_classes__*", "*ǁ_range__*", "*ǁ_long__*",
            "*ǁ_order__*", "*ǁ_device__*", "*ǁ_groups__*", "*.x__describe__*", "*.x_parse_params__*")),
    Module("data.layouts", ("src/textwsss/data/layouts/__init__.py", "src/textwsss/data/layouts/coco.py",
                            "src/textwsss/data/layouts/tags.py", "src/textwsss/data/layouts/voc.py"),
           # the fast tests: the scans on hand-made folders and the two voc-mini-free prepare tests
           ("tests/test_layouts_scan.py", "tests/test_layouts.py::test_tags_csv_separates_tags_by_bar_or_semicolon",
            "tests/test_layouts.py::test_tags_json_as_a_mapping_from_image_to_tags")),
    # training/loop.py's resume logic (the module): fit and the checkpoint functions; the file's other
    # parts (optimizers, schedules, the config) have hand-computed tests but no mutation score
    Module("training.loop.resume", ("src/textwsss/training/loop.py",),
           ("tests/test_train_loop_parts.py", "tests/test_train_loop.py"),
           ("*.x_fit__*", "*.x__load_checkpoint__*", "*.x_save_checkpoint__*", "*.x_read_checkpoint__*",
            "*.x_previous_checkpoint__*", "*.x__truncate_logs__*")),
    Module("pipeline.resumable", ("src/textwsss/pipeline/resumable.py",),
           ("tests/test_resumable_folder.py", "tests/test_resumable.py")),
    Module("pipeline.pseudo_labels", ("src/textwsss/pipeline/pseudo_labels.py",),
           # the fast tests: those on voc-mini images (CRF, worker pools) take a minute per surviving mutant
           ("tests/test_pseudo_labels_parts.py", "tests/test_pseudo_labels.py",
            "-k", "not crf_pseudo_labels_beat and not parallel_output and not cam_size_mismatch and not "
                  "missing_cam_files_are_listed and not interrupted_run")),
]}
# numpy only, so that it takes seconds: the pipeline of the check, not a verdict on the module
QUICK = Module("quick", ("src/textwsss/metrics.py",), ("tests/test_metrics.py::test_referring_miou_and_oiou",),
               ("*.x_mask_iou__*",))

# Survivors judged by reading them: (module key, function glob, regex searched in the mutated line, verdict),
# the first match wins. "equivalent: why" leaves the mutant out of the score; "left: why" names the test that
# would kill it. A survivor no rule matches is reported as "left: not reviewed yet".
MESSAGE = "left: the error's message is not asserted (pytest.raises(..., match=<the whole message>) kills it)"
VERDICTS: list[tuple[str, str, str, str]] = [
    # -- training.loop, pipeline.resumable, pipeline.pseudo_labels, data.layouts
    ("training.loop*", "_truncate_logs", r"split\(None\)",
     "equivalent: dvclive's TSV rows have no whitespace in the timestamp and step fields (at and before the step "
     "column), so split() and split('\\t') find the same step column and value"),
    ("training.loop*", "_open_live", r"^return Live\(.*(save_dvc_exp=None|resumed, save_dvc_exp=False)",
     "equivalent: dvclive's defaults: report=None is Live's own default, and save_dvc_exp is only read as a truth "
     "value (None is as false as False)"),
    ("training.loop*", "_rng_state", r"cuda",
     "left: runs only where CUDA is available; there the checkpoint test compares the 'cuda' states "
     "(test_the_checkpoint_carries_the_generators_states_at_the_end_of_its_epoch)"),
    ("data.layouts", "scan_coco", r"^categories = next\(\(d\[\"categories\"\] for d in loaded\.values\(\)\), None\)$",
     "equivalent: the default is only read as `if categories`, where None and [] are both false"),
    ("data.layouts", "read_cls_labels", r"\.reshape\(-2\)$",
     "equivalent: numpy (2.4) reads any negative size in reshape as 'the rest', as it does -1"),
    ("pipeline.pseudo_labels", "score_pseudo_labels", r"ConfusionMatrix\(names \+ \[\"(XX\(ignored\)XX|\(IGNORED\))\"\]\)",
     "equivalent: the extra column's name is never read (only its counts are)"),
    ("pipeline.pseudo_labels", "*", r"tqdm\(",
     "equivalent: the progress bar's label, unit and when it shows; no output depends on them"),
    ("pipeline.pseudo_labels", "_argmax_with_background", r"^return np\.concatenate\(\[bg, cams\], \)\.argmax\(0\)$",
     "equivalent: axis 0 is np.concatenate's default"),
    ("pipeline.pseudo_labels", "generate_pseudo_labels", r"\*, workers: int = 1, mode",
     "equivalent: the labels are byte-identical for any number of workers (test_parallel_output_is_byte_identical); "
     "the default only sets how many processes share the work"),
    ("pipeline.pseudo_labels", "generate_pseudo_labels", r"^progress = dict\(|^\)$",
     "equivalent: the progress bar's settings (its total, start, label and unit); no output depends on them"),
    ("pipeline.pseudo_labels", "generate_pseudo_labels",
     r"^if workers <= 2:$|Pool\(None\)|os\.cpu_count\(\) and 1|os\.cpu_count\(\) or 2|max\(len\(tasks\), 2\)",
     "equivalent: how many processes share the work; the labels are byte-identical for any number of workers "
     "(test_parallel_output_is_byte_identical)"),
    ("pipeline.pseudo_labels", "generate_pseudo_labels", r"get_context\(None\)",
     "left: the platform's default start method (fork on Linux) instead of spawn gives the same labels here; what "
     "spawn prevents, a forked worker hanging on a lock that the parent's OpenMP or torch threads held, does not "
     "happen on demand in a test"),
    ("pipeline.pseudo_labels", "pseudo_label",
     r"^probs \*= np\.maximum|^probs /= np\.maximum\(probs\.sum\((None, |keepdims=True|0, \)|0, keepdims=False)|"
     r"1\.000000000001\)$|cams\], \)$",
     "equivalent: crf_from_probs takes -log p as the unary and returns a softmax per pixel, so any per-pixel factor "
     "on p (the sum, the total, a floor) cancels; axis 0 is np.concatenate's default"),
    ("pipeline.pseudo_labels", "pseudo_label", r"np\.zeros\(cams\.shape\[1:\], (None)?\)$",
     "equivalent: an all-zero peak, float64 or float32, makes the background probability 1 either way"),
    ("pipeline.pseudo_labels", "_check_cams", r"astype\(None\)",
     "equivalent: float64 holds float16 and float32 CAM values exactly: the comparisons with the background scores "
     "and the CRF (which takes float32) see the same numbers"),
    ("pipeline.pseudo_labels", "_check_cams", r"np\.clip\(cams\.astype\(np\.float32\), None, 1\.0\)",
     "equivalent: a negative CAM loses to every background score of 'none' and 'irn' as 0 does (the params keep "
     "thresholds >= 0), and in 'prob' the CRF's unary clips every probability at 1e-5 and renormalises, so a negative "
     "value and 0 give the same labels (checked by hand)"),
    ("pipeline.pseudo_labels", "*", r"\.reshape\(-2\)",
     "equivalent: numpy (2.4) reads any negative size in reshape as 'the rest', as it does -1"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"grid_mode=True, \)$",
     "left: the edge mode of the downscale only matters where the size is not a multiple of downscale (the last "
     "sample falls past the edge); the helper's tests use multiples"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"^if downscale >= 1:$",
     "equivalent: downscale 1 zooms by 1 down and up again, the identity"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"^if blur_sigma >= 0:$",
     "equivalent: a Gaussian of sigma 0 is the identity"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"ndimage\.shift\(onehot, shift, order=1",
     "equivalent: an integer shift samples on the grid, where linear and nearest interpolation agree"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"np\.clip\(onehot, None, None\)",
     "equivalent: the maps are averages and Gaussian blurs of 0/1 values, never negative"),
    ("pipeline.pseudo_labels", "cams_from_mask", r"^cams = np\.zeros\(\(len\(keys\), h, w\), (dtype=None)?\)$|"
     r"^onehot = \(mask == k \+ 1\)\.astype\(None\)$",
     "equivalent: the maps are cast to `dtype` on return; float64 inside moves a rounding far below float16's"),
    ("losses.segmentation", "balanced_class_weights", r"\* counts\[present\]\.mean\(\)",
     "equivalent: the weights are normalised to mean 1 next, which cancels any common factor: (c m)^-p = (c/m)^-p "
     "m^-2p"),
    ("losses.segmentation", "balanced_class_weights", r"^return torch\.tensor\(w, (dtype=None)?\)$",
     "equivalent: float64 weights are cast to the logits' dtype where they are used (cross_entropy: weight.to(logits))"),
    ("losses.segmentation", "label_counts", r"^counts = np\.zeros\(num_labels, (dtype=None)?\)$",
     "equivalent: float64 holds pixel counts exactly (below 2^53), and every use of them is a ratio"),
    ("losses.segmentation", "cris_samples", r"and False else np\.asarray",
     "equivalent: np.asarray of a CPU tensor is its numpy array"),
    ("losses.segmentation", "*", r"^if (logits|target)\.shape\[[-+][23]:\] != (target|mask_logits)\.shape\[[-+][23]:\]:$",
     "equivalent: the comparison only decides whether to resize, and resizing (N, C, H, W) logits or (N, H, W) "
     "targets to the size they already have is the identity (bilinear without align_corners, or nearest)"),
    ("losses.segmentation", "cross_entropy", r"align_corners=None\)$|mode=\"bilinear\", \)$",
     "equivalent: align_corners False is F.interpolate's default"),
    ("losses.segmentation", "text_to_pixel_loss", r"size=mask_logits\.shape\[-2:\], \)",
     "equivalent: nearest is F.interpolate's default mode"),
    ("losses.segmentation", "cross_entropy", r"weight\.to\(None\)",
     "left: a cast of the weights to the logits' dtype and device: with float32 logits on the CPU (every test) there "
     "is nothing to cast; float16 logits on CUDA outside autocast would tell"),
    ("zeroshot.presence", "presence_scores", r'mode="bilinear", (align_corners=None)?\)\[0\]',
     "equivalent: align_corners False is F.interpolate's default"),
    ("zeroshot.presence", "presence_scores", r"softmax\(dim=\+1\)",
     "equivalent: the logits are (N, concepts): dim 1 is dim -1"),
    ("zeroshot.presence", "presence_scores", r"x\.to\(None\)",
     "left: the move onto the matcher's device: on the CPU, where every test runs, there is nothing to move; a CUDA "
     "matcher would tell"),
    ("zeroshot.presence", "presence_scores", r"batch_size: int = 17\)",
     "equivalent: the batch size only splits the images into batches; an image's score does not depend on its batch "
     "(the matcher runs in eval mode)"),
    ("data.layouts", "_rows", r"with open\(path, (newline=None)?\) as f:",
     "equivalent: without newline='' only a quoted field holding a line break reads differently; an image path or "
     "a tag list has none"),
    ("data.layouts", "_rows", r'^if "image" not in header and "tags" not in header:$',
     "left: killed by a test added after this run (test_tags_rows_of_csv_files: a header with only one of the two "
     "columns; checked by hand with the mutant applied)"),
    ("data.layouts", "_rows", r'if \("split" in header\) or True else None',
     "equivalent: without a split column row.get('split') is None, which gives None as the else branch does"),
    ("pipeline.pseudo_labels", "_single_threaded_children", r"^os\.environ\.pop\(k, ?\)$",
     "equivalent: the block sets every one of the variables, so each exists when it is popped"),
    ("data.layouts", "scan_tags", r"ClassList\(\(\"unknown\",\), \(\"(XXunknownXX|UNKNOWN)\",\)\)",
     "equivalent: the placeholder class list of a scan that has a problem already; prepare stops on the problems "
     "before anything reads its prompts"),
    ("data.layouts", "voc_classes", r'data\.classes == "(XXvocXX|VOC)"',
     "equivalent: data.classes 'voc' then takes the next branch, ClassList.preset(data.classes, ...): the same "
     "preset with the same prompts"),
    ("training.loop*", "fit", r'tqdm\(|^bar\.set_postfix\(', "equivalent: the progress bar only"),
    ("training.loop*", "fit", r"^per_rank = math\.ceil\(len\(dataset\) \* env\.world\)|"
     r"math\.ceil\(per_rank \* cfg\.batch_size\)\) or 1$",
     "left: killed by tests added after this run (checked by hand with the mutant applied): the lr logs of "
     "test_under_torchrun_each_rank_trains_on_its_share_and_only_rank_0_writes and "
     "test_a_data_set_smaller_than_a_batch_is_one_step_per_epoch"),
    ("training.loop*", "fit", r"^drop_last = per_rank > cfg\.batch_size$",
     "equivalent: they differ only at per_rank == batch_size, where the loader has no partial batch to drop and "
     "both step counts are 1 per batch"),
    ("training.loop*", "fit", r"^steps_per_epoch = \(per_rank // cfg\.batch_size if \(drop_last\) or True",
     "equivalent: without drop_last per_rank < batch_size, so per_rank // batch_size is 0, `or 1` makes it 1, "
     "as ceil(per_rank / batch_size) is"),
    ("training.loop*", "fit", r"\) or 2$",
     "equivalent: the count is 0 only for an empty data set, which the sampler refuses before any step"),
    ("training.loop*", "fit", r"seed(_everything|\))?\(?cfg\.seed \* (100_003 - epoch|100004 \+ epoch)\)|"
     r"manual_seed\(cfg\.seed \* (100_003 - epoch|100004 \+ epoch)\)",
     "equivalent: another seed for each (seed, epoch), as deterministic: every epoch still shuffles anew, a resumed "
     "run draws what the uninterrupted one did (the tests compare runs with each other, not with fixed numbers)"),
    ("training.loop*", "fit", r"^if env\.world >= 1:$",
     "equivalent: a DistributedSampler of one replica shuffles every epoch with its own seed: another deterministic "
     "order, as resume-safe"),
    ("training.loop*", "fit", r"^sampler = RandomSampler\(dataset, (generator=None)?\)$",
     "equivalent: RandomSampler then draws from the global torch generator, which seed_everything has just seeded "
     "for this epoch: as deterministic and resume-safe"),
    ("training.loop*", "fit", r"worker_init_fn=None|^drop_last=drop_last,$",
     "equivalent: PyTorch's worker loop itself seeds each worker's numpy and random generators from its base seed "
     "and worker id (test_each_loader_worker_draws_its_own_numpy_numbers passes either way); _worker_init reseeds "
     "them from the worker's torch seed, an equally deterministic choice"),
    ("training.loop*", "fit", r"pin_memory=(None|device\.type != \"cuda\"|device\.type == \"(XXcudaXX|CUDA)\")|"
     r"persistent_workers=None\)|pin_memory=device\.type == \"cuda\", \)$",
     "equivalent: pinned memory (a CUDA transfer speed-up) and keeping workers between epochs change speed only, not "
     "the batches"),
    ("training.loop*", "fit", r"^loader = DataLoader\(dataset, batch_size=cfg\.batch_size, sampler=sampler, worker_init_fn",
     "left: without num_workers the batches load in the main process: the same samples in the same order, only "
     "slower and with other (seeded) random draws for the augmentations; no test compares runs with and without "
     "workers"),
    ("training.loop*", "fit", r"torch\.autocast\(device\.type, (dtype=None, )?enabled=use_amp\)",
     "equivalent: float16 is autocast's default on CUDA, and on the CPU it is disabled (use_amp needs CUDA)"),
    ("training.loop*", "fit", r"^step (= 1|-= 1|\+= 2)$",
     "equivalent: the count is not read once the loop runs (it only sets where a resumed log starts; dvclive "
     "counts its own steps)"),
    ("training.loop*", "fit", r"DistributedDataParallel\(model\) if (\(env\.world > 1\) and False|env\.world > 2) else",
     "left: killed by tests/test_distributed.py::test_fit_under_torchrun_with_two_cpu_processes (two processes under "
     "torchrun, 13 s, outside this module's fast selection; checked by hand with the mutant applied)"),
    ("training.loop*", "fit", r'^use_amp = cfg\.amp and device\.type == "(XXcudaXX|CUDA)"$|^scaler = torch\.amp\.GradScaler\('
     r'|^place\(model, None\)$|^scaler\.unscale_\(None\)|^scaler\.load_state_dict\(None\)$|step_fn\(net, batch, None\)',
     "left: AMP and the move to the device matter on CUDA only: on the CPU the scaler is disabled whatever its "
     "arguments and the model is already where it must be; no test trains on CUDA (a GPU run with device cuda and "
     "amp true would tell)"),
    ("pipeline.resumable", "ResumableFolder.__init__", r"^self\.entries: dict\[str, list\] = None$",
     "equivalent: open() sets the entries before anything reads or records them; a folder never opened "
     "(generate_pseudo_labels' plain folder) only uses path() and done()"),
    ("pipeline.resumable", "ResumableFolder.record", r"^self\.entries\[name\] = None$",
     "equivalent: the journal line written next holds the entry, and finish (like open) folds the journals into "
     "the entries before the manifest is written, so the in-memory copy is always replaced"),
    ("metrics", "mask_iou", r"asarray\((pred|gt), (dtype=None)?\)",
     "equivalent: np.logical_and / logical_or treat every non-zero value as True, cast or not"),
    ("metrics", "referring_scores", r"np\.array\(.*(dtype=None|, )\)$",
     "equivalent: true division of the integer arrays gives the same float64 values"),
    ("metrics", "ConfusionMatrix.iou", r"errstate",
     "equivalent: the division is by np.maximum(union, 1), so there is no division warning to silence"),
    ("metrics", "ConfusionMatrix.iou", r"astype\(None\)", "equivalent: astype(None) is astype(float64)"),
    ("*", "*", r"^(raise |(scan\.)?problems\.append\()", MESSAGE),
    ("zeroshot.class_gate", "tune_on_split", r"tqdm\(", "equivalent: the progress bar's label only"),
    ("zeroshot.class_gate", "ClassGate.tune",
     r"^gate = cls\(matcher, list\(class_concepts\), background, (None|[01]\.0), (None|[01]\.0)\)$",
     "equivalent: placeholders: scores() reads neither the threshold nor the F1, and tune_presence_threshold sets "
     "both before the gate is returned"),
    ("losses.clims", "_imagenet_normalised", r"\.view\(3, 1, 1\)",
     "equivalent: (3, 1, 1) broadcasts against (N, 3, H, W) exactly as (1, 3, 1, 1) does"),
    ("losses.clims", "_imagenet_normalised", r"IMAGENET_(MEAN|STD), (dtype=None, )?device=images\.device\)",
     "equivalent: float32 constants only move a rounding: (x - mean) / std promotes to the wider dtype, and the "
     "matcher's resize casts the masked image to float32 anyway"),
    ("losses.clims", "clims_loss", r"labels >= 0\.5",
     "equivalent: labels are multi-hot (0 or 1, the docstring); > 0.5 and >= 0.5 differ only at exactly 0.5"),
    ("losses.clims", "clims_loss", r"^pair_images = pair_images\.to\(None\)",
     "equivalent: the matcher's resize casts every masked image to float32 anyway, so the cast to the maps' dtype "
     "only moves a rounding (under one float32 ulp)"),
    ("losses.clims", "clims_loss", r"\.to\(None\b|\.to\(sim\.dtype\)",
     "left: a move onto the matcher's device: where every tensor is on the CPU there is nothing to move, and a "
     "'meta' default device cannot stand in for a second device here (the tensor moved is made from the inputs, "
     "and a meta tensor cannot be copied); it takes a GPU: labels on the CPU, maps and matcher on CUDA"),
]


# -- inside the mutmut process ----------------------------------------------------------------------------

def _decorator_name(decorator) -> str:
    import libcst as cst

    expr = decorator.decorator
    if isinstance(expr, cst.Call):
        expr = expr.func
    return expr.attr.value if isinstance(expr, cst.Attribute) else getattr(expr, "value", "")


def allow_decorated_functions() -> None:
    """Let mutmut mutate decorated functions too (pydantic validators, @torch.no_grad(), @contextmanager).

    mutmut skips every decorated function but for @classmethod / @staticmethod, because a decorator on its
    copies of the function could register them (a pydantic validator would then run once per mutant). Here
    the trampoline keeps the function's decorators and the copies only @classmethod / @staticmethod, so the
    decorator runs once, around whichever copy is active. @property and its setters stay skipped."""
    import libcst as cst
    from mutmut.mutation import file_mutation as fm

    bound = {"classmethod", "staticmethod"}
    skipped = {"property", "cached_property", "setter", "getter", "deleter", "overload"}
    skip_node = fm.MutationVisitor._skip_node_and_children
    arrange = fm.function_trampoline_arrangement

    def _skip_node_and_children(self, node):
        if isinstance(node, cst.FunctionDef) and node.decorators:
            if {_decorator_name(d) for d in node.decorators} & skipped:
                return True
            return skip_node(self, node.with_changes(decorators=[]))
        return skip_node(self, node)

    def function_trampoline_arrangement(function, mutants, class_name):
        if not function.decorators:
            return arrange(function, mutants, class_name)
        kept = [d for d in function.decorators if _decorator_name(d) in bound]
        decls, nodes, assigns, names = arrange(function.with_changes(decorators=kept), mutants, class_name)
        trampoline = nodes[0]
        nodes = [trampoline.with_changes(decorators=[*function.decorators, trampoline.decorators[-1]]), *nodes[1:]]
        return decls, nodes, assigns, names

    fm.MutationVisitor._skip_node_and_children = _skip_node_and_children
    fm.function_trampoline_arrangement = function_trampoline_arrangement


def worker(globs: list[str], jobs: int, dump: Path, run: bool = True) -> None:
    """Runs in mutants/<key>/: mutmut over the configured files, then every mutant's status and diff as JSON."""
    # a job started in the background of a shell inherits SIGINT ignored; the budget's stop needs it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    allow_decorated_functions()
    from mutmut import __main__ as mm
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    try:
        if run:
            mm._run(globs, jobs)
    except SystemExit as e:  # mutmut exits when the clean tests fail; the dump below says so
        if e.code:
            raise
    mutants = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            diff = get_diff_for_mutant(name, path=path) if status != "killed" else ""
            mutants[name] = {"status": status, "diff": diff}
    dump.write_text(json.dumps(mutants, indent=1, ensure_ascii=False))


# -- the driver ---------------------------------------------------------------------------------------------

def _toml(value) -> str:
    # JSON's strings, numbers, booleans and lists are valid TOML, which is all [tool.mutmut] holds
    return json.dumps(value, ensure_ascii=False)


def prepare(module: Module, resume: bool = False) -> Path:
    """mutants/<key>/: a fresh copy of the project whose [tool.mutmut] mutates this module with its own tests.

    With `resume`, an earlier run's mutmut state (mutants/<key>/mutants/) is kept and only the copies of the project
    are refreshed: mutmut keeps the verdict of every mutant whose function is unchanged and checks the rest, so a
    run stopped at its budget goes on where it stopped."""
    work = WORK / module.key
    keep = resume and (work / "mutants").is_dir()
    if resume and not keep:
        log.info("%s: nothing to resume in %s, starting afresh", module.key, work)
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = ROOT / name
        if (work / name).is_dir():
            shutil.rmtree(work / name)
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.is_file():
            shutil.copy2(src, work / name)
    if (work / "shared").is_symlink():
        (work / "shared").unlink()
    # the tests find voc-mini at <repository>/../shared; mutmut runs them from <work>/mutants
    shared = (ROOT / ".." / "shared").resolve()
    if shared.is_dir():
        (work / "shared").symlink_to(shared, target_is_directory=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    config = dict(project.get("tool", {}).get("mutmut", {}))
    config["only_mutate"] = list(module.sources)
    config["pytest_add_cli_args_test_selection"] = list(module.tests)
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {_toml(v)}" for k, v in project.get("tool", {}).get("pytest", {}).get("ini_options", {}).items()]
    lines += ["", "[tool.mutmut]"] + [f"{k} = {_toml(v)}" for k, v in config.items()]
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return work


def run_module(module: Module, jobs: int, budget_min: float | None, command: str, resume: bool = False,
               recheck: bool = False) -> dict:
    globs = [f"textwsss.{_dotted(s)}.{g}" if not g.startswith("*") else g
             for s in module.sources for g in module.functions] if module.functions != ("*",) else []
    if recheck:
        # the survivors of the last run, by name (mutmut reruns every mutant it is given by name and keeps the
        # verdicts of the rest): after tests were added, with the module's source unchanged
        last = load_result(module)
        globs = [s["name"] for s in last["survivors"] if not s["verdict"].startswith("equivalent")]
        if not globs:
            log.info("%s: no survivor to recheck", module.key)
            return last
        resume = True
    before = json.loads((WORK / module.key / "run.json").read_text()) \
        if resume and (WORK / module.key / "run.json").is_file() and (WORK / module.key / "mutants").is_dir() else None
    work = prepare(module, resume)
    dump = work / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(globs), "--jobs", str(jobs),
           "--dump", str(dump)]
    log.info("%s: mutating %s against %s (log in %s)", module.key, ", ".join(module.sources),
             " ".join(module.tests), work / "mutmut.log")
    start = time.monotonic()
    with open(work / "mutmut.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=budget_min * 60 if budget_min else None)
        except subprocess.TimeoutExpired:
            # mutmut stops at SIGINT and keeps what it checked; the rest is reported as not checked
            log.warning("%s: budget of %s min spent, stopping mutmut", module.key, budget_min)
            proc.send_signal(signal.SIGINT)
            proc.wait()
    wall = time.monotonic() - start
    if proc.returncode or not dump.is_file():
        raise RuntimeError(f"mutmut failed on {module.key} (exit {proc.returncode}); see {work / 'mutmut.log'}")
    run = {"command": command, "wall_s": wall, "commit": commit(module), "cpu": cpu_name(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if before:  # the wall time of the whole check, over its runs
        run["wall_s"] += before["wall_s"]
        run["command"] = f"{before['command']}, then {command}"
    (work / "run.json").write_text(json.dumps(run))
    return load_result(module)


def load_result(module: Module) -> dict:
    """The summary of the last run of `module`, from mutants/<key>/ (so verdicts can be re-applied)."""
    work = WORK / module.key
    if not (work / "result.json").is_file() or not (work / "run.json").is_file():
        raise FileNotFoundError(f"no finished run of {module.key} in {work}: run scripts/mutation.py {module.key}")
    mutants = json.loads((work / "result.json").read_text())
    run = json.loads((work / "run.json").read_text())
    if module.functions != ("*",):
        mutants = {k: v for k, v in mutants.items() if any(fnmatch.fnmatchcase(k, g) for g in module.functions)}
    return {**summarise(module, mutants), **run}


def _dotted(source: str) -> str:
    return source.removeprefix("src/textwsss/").removesuffix(".py").replace("/", ".")


def _function(mutant: str) -> str:
    name = mutant.rsplit(".", 1)[-1].split("__mutmut_")[0]
    return name[2:].replace("ǁ", ".") if name.startswith("xǁ") else name.removeprefix("x_")


def _mutated_line(diff: str) -> str:
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else ""


def summarise(module: Module, mutants: dict) -> dict:
    survivors = []
    counts = {"total": len(mutants), "killed": 0, "survived": 0, "equivalent": 0, "no tests": 0, "not checked": 0}
    for name, m in sorted(mutants.items()):
        if m["status"] in ("killed", "timeout", "caught by type check", "segfault"):
            counts["killed"] += 1
            continue
        if m["status"] in ("not checked", "check was interrupted by user"):
            counts["not checked"] += 1
            continue
        func, line = _function(name), _mutated_line(m["diff"])
        verdict = next((v for mod, f, pattern, v in VERDICTS if fnmatch.fnmatchcase(module.key, mod)
                        and fnmatch.fnmatchcase(func, f) and re.search(pattern, line)), "left: not reviewed yet")
        if verdict.startswith("equivalent"):
            counts["equivalent"] += 1
        else:
            counts["survived"] += 1
            if m["status"] == "no tests":
                counts["no tests"] += 1
        survivors.append({"name": name, "status": m["status"], "diff": m["diff"], "verdict": verdict})
    changing = counts["total"] - counts["equivalent"] - counts["not checked"]
    score = counts["killed"] / changing if changing else 1.0
    return {"key": module.key, "sources": list(module.sources), "tests": list(module.tests), "counts": counts,
            "score": score, "survivors": survivors}


def cpu_name() -> str:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = info.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, {isa}), {os.cpu_count()} cores")


def commit(module: Module) -> str:
    """HEAD, and which of the module's files (sources and tests) differ from it: those were measured as found."""
    files = [*module.sources, *(t.split("::")[0] for t in module.tests if t.startswith("tests/"))]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *files], cwd=ROOT, capture_output=True,
                               text=True)
    except OSError:
        return "unknown"
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    return rev.stdout.strip() + (f" (with uncommitted changes in {', '.join(changed)})" if changed else "")


def section(result: dict) -> str:
    c = result["counts"]
    ok = "meets" if result["score"] >= TARGET else "below"
    lines = [f"<!-- module: {result['key']} -->", f"## {result['key']}", "",
             f"{', '.join(result['sources'])} against `{' '.join(result['tests'])}`", "",
             "| mutants | killed | survived (of which no test runs it) | equivalent | score |",
             "|---|---|---|---|---|",
             f"| {c['total']} | {c['killed']} | {c['survived']} ({c['no tests']}) | {c['equivalent']} | "
             f"**{100 * result['score']:.1f}%** ({ok} the {TARGET:.0%} target"
             + (f"; {c['not checked']} mutants not checked" if c["not checked"] else "") + ") |", "",
             f"`{result['command']}` at commit {result['commit']}: {result['wall_s'] / 60:.1f} min wall on {result['cpu']}"
             f" (shared with other work), {result['date']}."
             + (f" Stopped at its time budget: {c['not checked']} mutants not checked (not in the score)."
                if c["not checked"] else ""), ""]
    for s in result["survivors"]:
        lines += [f"- `{s['name']}` ({s['status']}): {s['verdict']}", "", "  ```diff"]
        lines += [f"  {line}" for line in s["diff"].strip().splitlines()
                  if not line.startswith(("---", "+++"))] + ["  ```", ""]
    return "\n".join(lines + [f"<!-- end: {result['key']} -->", ""])


HEADER = """# Mutation check of the core modules

`python scripts/mutation.py [MODULE ...]` (mutmut; see the script's docstring). One small bug at a time is put
into a copy of a core module and the module's own fast tests are run against it. The score counts killed mutants
(a test failed or timed out) over the mutants that change behaviour: those judged equivalent are listed with why
and left out; log calls and docstrings are not mutated at all (pyproject.toml `[tool.mutmut]`). Every survivor is
listed with its diff and a verdict. Target (issue 26): at least 85% in every module.

| module | mutants | killed | survived | equivalent | score |
|---|---|---|---|---|---|
"""


def write_report(path: Path, results: list[dict]) -> None:
    """Replaces the sections of `results` in the report, keeping the others. Two runs on different modules (each
    in its own mutants/<key>/) may finish at the same moment: the read-merge-write holds an exclusive lock, so
    neither drops the section the other just wrote."""
    import fcntl

    WORK.mkdir(exist_ok=True)
    with open(WORK / "report.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge_report(path, results)


def _merge_report(path: Path, results: list[dict]) -> None:
    from textwsss.io import write_text

    sections = {}
    if path.is_file():  # keep the sections of modules not run this time
        text = path.read_text()
        for key in MODULES:
            start, end = f"<!-- module: {key} -->", f"<!-- end: {key} -->"
            if start in text and end in text:
                sections[key] = text[text.index(start):text.index(end) + len(end)] + "\n"
    summary = {}
    for r in results:
        sections[r["key"]] = section(r)
        summary[r["key"]] = r
    rows = []
    for key, text in sections.items():
        row = text.split("|---|---|---|---|---|", 1)[1].strip().splitlines()[0] if "|---|" in text else ""
        rows.append(f"| {key} {row}")
    order = [k for k in MODULES if k in sections] + [k for k in sections if k not in MODULES]
    body = HEADER + "\n".join(r for k in order for r in rows if r.startswith(f"| {k} |")) + "\n\n"
    write_text(path, body + "\n".join(sections[k] for k in order))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to check (default: all): {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutmut workers (the machine is shared: 1 or 2)")
    parser.add_argument("--quick", action="store_true", help="one small function against one test, seconds")
    parser.add_argument("--budget-min", type=float, help="stop each module after this many minutes")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the last run of each module (kept verdicts of unchanged functions)")
    parser.add_argument("--recheck", action="store_true",
                        help="rerun only the last run's survivors (after adding tests; the source unchanged)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the report from the last runs (after editing VERDICTS)")
    parser.add_argument("--report", type=Path, default=None, help="report to write (default %(default)s)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dump-only", action="store_true", help=argparse.SUPPRESS)  # salvage a killed run
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker), args.jobs, args.dump, run=not args.dump_only)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; expected some of: {', '.join(MODULES)}")
    modules = [QUICK] if args.quick else [MODULES[m] for m in (args.modules or MODULES)]
    report = args.report or (WORK / "quick.md" if args.quick else REPORT)
    command = "python scripts/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    for module in modules:
        result = load_result(module) if args.render else run_module(module, args.jobs, args.budget_min, command.strip(),
                                                               args.resume, args.recheck)
        results.append(result)
        write_report(report, results)
        c = result["counts"]
        print(f"{module.key}: {c['killed']}/{c['total'] - c['equivalent']} killed ({100 * result['score']:.1f}%),"
              f" {c['survived']} survived, {c['equivalent']} equivalent, {result['wall_s']:.0f} s")
    log.info("report: %s", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
