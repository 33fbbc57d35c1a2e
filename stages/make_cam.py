"""make_cam: multi-scale + flip CAMs of every train image (textwsss.pipeline.make_cam)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("make_cam", nproc_key="make_cam")
