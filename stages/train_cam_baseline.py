"""train_cam_baseline: the BCE CAM network CLIMS fine-tunes (textwsss.pipeline.train_cam_baseline)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("train_cam_baseline", nproc_key="train_cam_baseline")
