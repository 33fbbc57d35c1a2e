"""tas: training-free zero-shot referring segmentation (textwsss.pipeline.tas)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("tas")
