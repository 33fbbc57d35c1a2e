"""eval_cam: CAM mIoU on the train split with a background-threshold sweep, the curve and overlay figures."""
import logging

from _common import METRICS, PREPARED, ROOT, start

from textwsss.eval_cams import evaluate_cams, write_cam_figures
from textwsss.io import write_json
from textwsss.prepare import read_prepared

if __name__ == "__main__":
    params = start("eval_cam")
    ids, _ = read_prepared(PREPARED, params.data.train_split)
    root, cam_dir = params.data.root_path(), ROOT / "data" / "cams"
    best, curve = evaluate_cams(root, ids, cam_dir, params.eval_cam.thresholds.values())
    write_json(METRICS / "cam.json", best)
    write_json(ROOT / "reports" / "plots" / "cam_threshold.json", curve)
    write_cam_figures(root, ids, cam_dir, best["threshold"], ROOT / "reports" / "figures" / "cam",
                      params.eval_cam.figures)
    logging.getLogger("eval_cam").info("CAM mIoU %.2f at threshold %.2f", best["miou"], best["threshold"])
