"""train_seg: DeepLab v3+ or CRIS on the pseudo-labels (textwsss.pipeline.train_seg)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("train_seg", nproc_key="train_seg")
