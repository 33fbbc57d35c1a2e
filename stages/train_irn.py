"""train_irn: IRN's relation network on the CRF seeds (textwsss.pipeline.train_irn)."""
from _common import run_stage

if __name__ == "__main__":
    run_stage("train_irn", nproc_key="train_irn")
