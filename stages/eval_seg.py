"""eval_seg: the segmentation model on the val split (textwsss.pipeline.eval_seg)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("eval_seg")
