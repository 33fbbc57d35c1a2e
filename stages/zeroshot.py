"""zeroshot: the training-free baseline: dense class maps from the text-image matcher alone (GradCAM on a
softmax over the image's classes and the background words, as CLIP-ES does), scored on the val split."""
import logging

from _common import METRICS, PREPARED, ROOT, start

from textwsss.io import write_json
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared
from textwsss.zeroshot_eval import evaluate_zeroshot

if __name__ == "__main__":
    params = start("zeroshot")
    ids, labels = read_prepared(PREPARED, params.data.val_split)
    best, curve = evaluate_zeroshot(params, ids, labels, resolve_device(params.device),
                                    figures_dir=ROOT / "reports" / "figures" / "zeroshot")
    write_json(METRICS / "zeroshot.json", best)
    write_json(ROOT / "reports" / "plots" / "zeroshot_threshold.json", curve)
    logging.getLogger("zeroshot").info("zero-shot mIoU %.2f at threshold %.2f", best["miou"], best["threshold"])
