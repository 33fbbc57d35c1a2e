"""prepare: check the dataset in its layout and write the prepared view (textwsss.pipeline.prepare)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("prepare")
