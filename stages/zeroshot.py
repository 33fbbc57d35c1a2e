"""zeroshot: the training-free dense baseline (textwsss.pipeline.zeroshot)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("zeroshot")
