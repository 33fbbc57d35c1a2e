"""pseudo_labels: dense-CRF pseudo-labels with ignore regions and their mIoU (textwsss.pipeline.pseudo_labels)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("pseudo_labels")
