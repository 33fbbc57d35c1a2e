"""train_cam: CLIMS (or BCE) training of the CAM network (textwsss.pipeline.train_cam)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("train_cam", nproc_key="train_cam")
