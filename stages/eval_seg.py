"""eval_seg: the trained segmentation model on the val split: seg.json, confusion matrix, overlay figures."""
import logging

from _common import METRICS, PREPARED, ROOT, start

from textwsss.checkpoints import load_model
from textwsss.io import write_json
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared
from textwsss.segment import evaluate_model
from textwsss.viz import confusion_figure, pick_figure_ids
from textwsss.voc import LABEL_NAMES

if __name__ == "__main__":
    params = start("eval_seg")
    e = params.eval_seg
    device = resolve_device(params.device)
    ids, _ = read_prepared(PREPARED, params.data.val_split)
    model, _ = load_model(ROOT / "data" / "train_seg" / "model.pt", device)
    crf = e.crf if e.postprocess_crf else None
    summary, matrix = evaluate_model(model, params.data.root_path(), ids, scales=e.scales, flip=e.flip, crf=crf,
                                     device=device, figures_dir=ROOT / "reports" / "figures" / "seg",
                                     figure_ids=pick_figure_ids(ids, e.figures))
    write_json(METRICS / "seg.json", summary)
    write_json(ROOT / "reports" / "plots" / "seg_confusion.json",
               {"labels": list(LABEL_NAMES), "matrix": matrix.tolist()})
    confusion_figure(ROOT / "reports" / "plots" / "seg_confusion.png", matrix)
    logging.getLogger("eval_seg").info("val mIoU %.2f, pixel accuracy %.2f", summary["miou"], summary["pixel_acc"])
