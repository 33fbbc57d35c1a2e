"""random_walk: IRN's random walk, full-coverage pseudo-labels (textwsss.pipeline.random_walk)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("random_walk")
