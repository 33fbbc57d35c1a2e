"""`textwsss predict` and `textwsss evaluate`: use a trained segmentation checkpoint alone, from any directory and
without params.yaml. The checkpoint carries its architecture, its class list and what eval_seg scored it with
(working size, scales, flip, CRF, and the class gate: the matcher's spec, its fitted state, the tuned threshold),
so by default `evaluate` gives the mIoU of reports/metrics/seg.json.

    textwsss predict --checkpoint data/train_seg/model.pt IMAGE_OR_FOLDER [...] --out predictions/
    textwsss evaluate --checkpoint data/train_seg/model.pt --root ../shared/voc-mini --split val --out val.json

Flags override the checkpoint's options: --scales, --flip/--no-flip, --crf/--no-crf, --max-side, --class-gate T
(another presence threshold for the checkpoint's matcher) or --class-gate none (no gate: the model's own labels,
seg.json's "ungated"). The CAM network of train_cam is not a segmentation model and is refused by name.

predict writes a label PNG and an overlay for every readable image, and at the end names every file it could
not read (exit status 1 when there was one). Images are processed one at a time at a working size capped by
--max-side, so memory stays bounded whatever the number and the size of the images.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .data.images import IMAGE_SUFFIXES

log = logging.getLogger("textwsss")

PREDICT_FALLBACK_SIDE = 1024  # predict's working size for a checkpoint without an evaluation record


def _inputs(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, [(path, reason)] for inputs that are neither an image file nor a folder holding some)."""
    files, bad = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                bad.append((p, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            bad.append((p, "no such file or folder"))
    return list(dict.fromkeys(files)), bad


def _output_names(files: list[Path]) -> dict[Path, str]:
    """A distinct output name per input: its stem, or stem plus a counter where stems repeat."""
    names, seen = {}, {}
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        names[f] = f.stem if n == 0 else f"{f.stem}-{n}"
    return names


def _gate_arg(text: str):
    """--class-gate: 'none' (off) or a presence threshold."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a presence threshold in [0, 1] or 'none', got {text!r}") from None


def _overrides(args) -> dict:
    return {"max_side": args.max_side, "scales": args.scales, "flip": args.flip, "crf": args.crf}


def _gate(args, ckpt, device):
    """The class gate of the checkpoint, or of --class-gate; a threshold for a checkpoint without a gate record
    takes its matcher from --params (guide, clims.synonyms, zeroshot.background_words)."""
    from .evaluation import STORED, class_gate

    if args.class_gate is None:
        return class_gate(ckpt, STORED, device)
    if args.class_gate == "none":
        return None
    if ckpt.gate_record is not None:
        return class_gate(ckpt, args.class_gate, device)
    if not 0.0 <= args.class_gate <= 1.0:
        raise ValueError(f"--class-gate: expected a presence threshold in [0, 1] or 'none', got {args.class_gate}")
    from .guide.factory import matcher_from_params
    from .params import load_params
    from .zeroshot.class_gate import ClassGate

    params = load_params(args.params)
    log.warning("%s carries no class gate: its matcher is built from the params file's guide section",
                ckpt.path)
    classes = ckpt.classes
    matcher = matcher_from_params(params, classes, device)
    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    return ClassGate(matcher, list(classes.prompts), background, args.class_gate, None)


def predict(args) -> int:
    from tqdm import tqdm

    from .data.images import read_image
    from .evaluation import InferenceOptions, inference_copy, inference_options, load_segmentation
    from .io import save_label_png, save_overlay
    from .segment import predict_labels

    files, bad = _inputs(args.inputs)
    ckpt = load_segmentation(args.checkpoint, args.device)
    classes = ckpt.classes
    # an old checkpoint keeps predict's former cap, so memory stays bounded on large photos
    options = inference_options(ckpt, InferenceOptions(max_side=PREDICT_FALLBACK_SIDE), **_overrides(args))
    gate = _gate(args, ckpt, args.device)
    model = inference_copy(ckpt.model, args.device)
    out = Path(args.out)
    names = _output_names(files)
    done = 0
    for f in tqdm(files, desc="predict", unit="img", disable=None):
        try:
            image = read_image(f)
        except ValueError as err:
            bad.append((f, str(err).removeprefix(f"{f}: ")))
            continue
        labels = predict_labels(model, image, classes, scales=options.scales, flip=options.flip, crf=options.crf,
                                max_side=options.max_side, keep=gate.classes(image) if gate is not None else None,
                                device=args.device)
        save_label_png(out / f"{names[f]}.png", labels)
        save_overlay(out / f"{names[f]}_overlay.jpg", image, labels)
        del image, labels
        done += 1
    log.info("%d label maps and overlays written to %s (classes: %s)", done, out, ", ".join(classes.names))
    if bad:
        log.error("%d input(s) could not be read:\n  %s", len(bad), "\n  ".join(f"{p}: {why}" for p, why in bad))
        return 1
    return 0


def evaluate(args) -> int:
    from .data.prepared import read_prepared
    from .evaluation import evaluate_checkpoint, load_segmentation
    from .io import write_json
    from .params import DataParams
    from .pipeline.prepare import prepare_dataset

    ckpt = load_segmentation(args.checkpoint, args.device)
    classes = ckpt.classes
    data = DataParams(layout=args.layout, root=str(Path(args.root).resolve()), val_split=args.split,
                      classes=list(classes.names), prompts=dict(zip(classes.names, classes.prompts)),
                      masks=args.masks, images=args.images, labels=args.labels)
    gate = _gate(args, ckpt, args.device)
    with tempfile.TemporaryDirectory(prefix="textwsss-evaluate-") as tmp:
        prepare_dataset(data, Path(tmp) / "prepared", roles=("val",))  # every bad file named before any scoring
        dataset = read_prepared(Path(tmp) / "prepared", data.root_path())
        summary, _ = evaluate_checkpoint(ckpt, dataset, dataset.ids("val"), overrides=_overrides(args), gate=gate,
                                         device=args.device)
    write_json(args.out, summary)
    if summary["miou"] is None:
        log.error("no image of split '%s' has a mask: nothing to score", args.split)
        return 1
    log.info("mIoU %.2f, pixel accuracy %.2f on %d images -> %s", summary["miou"], summary["pixel_acc"],
             summary["n_images"], args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textwsss", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", required=True,
                        help="a segmentation model written by train_seg (data/train_seg/model.pt)")
    common.add_argument("--device", default="cpu")
    common.add_argument("--scales", type=float, nargs="+", default=None,
                        help="multi-scale inference (default: the checkpoint's, eval_seg.scales)")
    common.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the horizontally flipped image (default: the checkpoint's)")
    common.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None,
                        help="dense-CRF post-processing (default: the checkpoint's; --crf on a checkpoint without "
                             "CRF settings uses DeepLab's)")
    common.add_argument("--max-side", type=int, default=None,
                        help="the model sees each image downscaled to this long side; labels come back at full "
                             "size (default: the checkpoint's, eval_seg.max_side; 0: full size, memory grows with "
                             "the image)")
    common.add_argument("--class-gate", type=_gate_arg, default=None, metavar="T|none",
                        help="paint only the classes whose presence score under the checkpoint's matcher reaches "
                             "T; none: no gate (default: the gate train_seg tuned and stored in the checkpoint)")
    common.add_argument("--params", default=None,
                        help="only for checkpoints of an older train_seg without a class gate record: the params "
                             "file whose guide section builds the matcher of --class-gate T (default: the "
                             "repository's params.yaml)")
    p = sub.add_parser("predict", parents=[common], help="label PNGs and overlays for images or folders")
    p.add_argument("inputs", nargs="+", help="images and/or folders of images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=predict)
    e = sub.add_parser("evaluate", parents=[common], help="score a model on a dataset's split")
    e.add_argument("--root", required=True, help="the dataset root")
    e.add_argument("--split", required=True, help="split name, e.g. val (coco: val2014)")
    e.add_argument("--layout", default="voc", choices=["voc", "voc_aug", "coco", "tags"])
    e.add_argument("--masks", default="", help="folder of label PNGs below the root (default: the layout's)")
    e.add_argument("--images", default="", help="folder of images below the root (default: the layout's)")
    e.add_argument("--labels", default="", help="tags layout: the tags file (default tags.csv)")
    e.add_argument("--out", required=True, help="JSON file for the scores (same keys as reports/metrics/seg.json)")
    e.set_defaults(func=evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
