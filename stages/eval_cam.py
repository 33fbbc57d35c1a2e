"""eval_cam: CAM mIoU with a background-threshold sweep (textwsss.pipeline.eval_cam)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("eval_cam")
