"""`textwsss predict` and `textwsss evaluate`: use a trained segmentation checkpoint without params.yaml.

    textwsss predict --checkpoint data/train_seg/model.pt IMAGE_OR_FOLDER [...] --out predictions/
    textwsss evaluate --root ../shared/voc-mini --split val --checkpoint data/train_seg/model.pt --out val.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
log = logging.getLogger("textwsss")


def _inputs(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    if not files:
        raise FileNotFoundError(f"no images found in {paths}")
    return files


def _crf(args):
    if not args.crf:
        return None
    from .crf import DEEPLAB_CRF

    return DEEPLAB_CRF


def predict(args) -> None:
    from .checkpoints import load_model
    from .io import save_label_png
    from .segment import predict_labels
    from .viz import blend, colorize
    from .voc import read_image

    model, _ = load_model(args.checkpoint, args.device)
    files = _inputs(args.inputs)
    out = Path(args.out)
    from PIL import Image

    from .io import atomic_path

    for f in files:
        image = read_image(f)
        labels = predict_labels(model, image, scales=args.scales, flip=args.flip, crf=_crf(args), device=args.device)
        save_label_png(out / f"{f.stem}.png", labels)
        with atomic_path(out / f"{f.stem}_overlay.jpg") as tmp:
            Image.fromarray(blend(image, colorize(labels), 0.6)).save(tmp, format="JPEG", quality=90)
    log.info("%d label maps and overlays written to %s", len(files), out)


def evaluate(args) -> None:
    from .checkpoints import load_model
    from .io import write_json
    from .prepare import validate_root
    from .segment import evaluate_model

    data = validate_root(Path(args.root), [args.split])  # every bad file named before any scoring
    model, _ = load_model(args.checkpoint, args.device)
    summary, _ = evaluate_model(model, Path(args.root), data.splits[args.split], scales=args.scales, flip=args.flip,
                                crf=_crf(args), device=args.device)
    write_json(args.out, summary)
    log.info("mIoU %.2f, pixel accuracy %.2f -> %s", summary["miou"], summary["pixel_acc"], args.out)


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
    p = sub.add_parser("predict", parents=[common], help="label PNGs and overlays for images or folders")
    p.add_argument("inputs", nargs="+", help="images and/or folders of images")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=predict)
    e = sub.add_parser("evaluate", parents=[common], help="score a model on a VOC-layout root")
    e.add_argument("--root", required=True, help="VOC root (JPEGImages, SegmentationClass, ImageSets/Segmentation)")
    e.add_argument("--split", required=True, help="split name, e.g. val")
    e.add_argument("--out", required=True, help="JSON file for the scores (same keys as reports/metrics/seg.json)")
    e.set_defaults(func=evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
