"""pseudo_labels: dense-CRF refinement of the CAMs into label PNGs with ignore regions, and their mIoU."""
import logging

from _common import METRICS, PREPARED, ROOT, start

from textwsss.io import write_json
from textwsss.prepare import read_prepared
from textwsss.pseudo_labels import generate_pseudo_labels, score_pseudo_labels

if __name__ == "__main__":
    params = start("pseudo_labels")
    p = params.pseudo_labels
    ids, _ = read_prepared(PREPARED, params.data.train_split)
    root, out_dir = params.data.root_path(), ROOT / "data" / "pseudo_labels"
    generate_pseudo_labels(root, ids, ROOT / "data" / "cams", out_dir, workers=p.workers, mode=p.mode,
                           fg_threshold=p.fg_threshold, bg_threshold=p.bg_threshold, threshold=p.threshold,
                           prob_alpha=p.prob_alpha, confidence=p.confidence, gt_prob=p.gt_prob,
                           crf=p.crf)
    scores = score_pseudo_labels(root, ids, out_dir)
    write_json(METRICS / "pseudo_labels.json", scores)
    logging.getLogger("pseudo_labels").info("pseudo-label mIoU %.2f, ignored %.1f%% of pixels",
                                            scores["miou"], 100 * scores["ignore_ratio"])
