"""`textwsss predict` and `textwsss evaluate`: use a trained segmentation checkpoint without params.yaml (the
checkpoint carries its architecture and its class list).

    textwsss predict --checkpoint data/train_seg/model.pt IMAGE_OR_FOLDER [...] --out predictions/
    textwsss evaluate --checkpoint data/train_seg/model.pt --root ../shared/voc-mini --split val --out val.json

With --class-gate T (the threshold eval_seg tuned: reports/metrics/seg.json, class_gate.threshold) the model
paints only the classes the text-image matcher of params.yaml (guide) finds in each image, as eval_seg scores it.

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


def _gate(args, classes, device):
    """The class gate of --class-gate, its matcher built from --params (guide, clims.synonyms,
    zeroshot.background_words); None without --class-gate."""
    if args.class_gate is None:
        return None
    if not 0.0 <= args.class_gate <= 1.0:
        raise ValueError(f"--class-gate: expected a presence threshold in [0, 1], got {args.class_gate}")
    from .guide.factory import matcher_from_params
    from .params import load_params
    from .zeroshot.class_gate import ClassGate

    params = load_params(args.params)
    matcher = matcher_from_params(params, classes, device)
    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    return ClassGate(matcher, list(classes.prompts), background, args.class_gate, None)


def _crf(args):
    if not args.crf:
        return None
    from .params import DEEPLAB_CRF

    return DEEPLAB_CRF


def predict(args) -> int:
    from tqdm import tqdm

    from .data.images import read_image
    from .io import save_label_png, save_overlay
    from .models.checkpoints import load_model
    from .pipeline.eval_seg import inference_copy
    from .segment import predict_labels

    files, bad = _inputs(args.inputs)
    model, _ = load_model(args.checkpoint, args.device)
    classes = model.classes
    gate = _gate(args, classes, args.device)
    model = inference_copy(model, args.device)
    out = Path(args.out)
    names = _output_names(files)
    done = 0
    for f in tqdm(files, desc="predict", unit="img", disable=None):
        try:
            image = read_image(f)
        except ValueError as err:
            bad.append((f, str(err).removeprefix(f"{f}: ")))
            continue
        labels = predict_labels(model, image, classes, scales=args.scales, flip=args.flip, crf=_crf(args),
                                max_side=args.max_side, keep=gate.classes(image) if gate is not None else None,
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
    from .io import write_json
    from .models.checkpoints import load_model
    from .params import DataParams
    from .pipeline.eval_seg import evaluate_model
    from .pipeline.prepare import prepare_dataset
    from .data.prepared import read_prepared

    model, _ = load_model(args.checkpoint, args.device)
    classes = model.classes
    data = DataParams(layout=args.layout, root=str(Path(args.root).resolve()), val_split=args.split,
                      classes=list(classes.names), prompts=dict(zip(classes.names, classes.prompts)),
                      masks=args.masks, images=args.images, labels=args.labels)
    with tempfile.TemporaryDirectory(prefix="textwsss-evaluate-") as tmp:
        prepare_dataset(data, Path(tmp) / "prepared", roles=("val",))  # every bad file named before any scoring
        dataset = read_prepared(Path(tmp) / "prepared", data.root_path())
        summary, _ = evaluate_model(model, dataset, dataset.ids("val"), classes, scales=args.scales, flip=args.flip,
                                    crf=_crf(args), max_side=args.max_side, gate=_gate(args, classes, args.device),
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
    common.add_argument("--checkpoint", required=True, help="a model file written by train_seg")
    common.add_argument("--device", default="cpu")
    common.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale inference")
    common.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    common.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    common.add_argument("--class-gate", type=float, default=None, metavar="T",
                        help="paint only the classes whose matcher presence score reaches T (eval_seg's tuned "
                             "value: reports/metrics/seg.json class_gate.threshold)")
    common.add_argument("--params", default=None,
                        help="params file whose guide section builds the matcher of --class-gate "
                             "(default: the repository's params.yaml)")
    p = sub.add_parser("predict", parents=[common], help="label PNGs and overlays for images or folders")
    p.add_argument("inputs", nargs="+", help="images and/or folders of images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-side", type=int, default=1024,
                   help="the model sees each image downscaled to this long side; labels come back at full size "
                        "(default 1024; 0: full size, memory grows with the image)")
    p.set_defaults(func=predict)
    e = sub.add_parser("evaluate", parents=[common], help="score a model on a dataset's split")
    e.add_argument("--root", required=True, help="the dataset root")
    e.add_argument("--split", required=True, help="split name, e.g. val (coco: val2014)")
    e.add_argument("--layout", default="voc", choices=["voc", "voc_aug", "coco", "tags"])
    e.add_argument("--masks", default="", help="folder of label PNGs below the root (default: the layout's)")
    e.add_argument("--images", default="", help="folder of images below the root (default: the layout's)")
    e.add_argument("--labels", default="", help="tags layout: the tags file (default tags.csv)")
    e.add_argument("--max-side", type=int, default=0, help="cap of the working size (0: full size)")
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
