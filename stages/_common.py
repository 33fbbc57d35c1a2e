"""Shared start-up of every stage script: logging, params validation, the workspace, clean failure messages."""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the stages run from a checkout even when the package is not installed

from textwsss.params import ParamsError, load_params  # noqa: E402
from textwsss.pipeline.workspace import Workspace  # noqa: E402

#: Errors that are the user's to fix (bad data, params, missing weights): one clear message, no traceback.
USER_ERRORS = (ParamsError, ValueError, FileNotFoundError, RuntimeError)


def run_stage(stage: str, nproc_key: str | None = None) -> None:
    """Runs textwsss.pipeline.<stage>.run(params, workspace); `nproc_key`: the params section whose
    nproc_per_node > 1 relaunches the stage under torchrun."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.WARNING)
    log = logging.getLogger(stage)
    try:
        params = load_params()
    except ParamsError as err:
        log.error("%s", err)
        raise SystemExit(2) from None
    if nproc_key is not None:
        from textwsss.training.launch import relaunch_under_torchrun

        relaunch_under_torchrun(getattr(params, nproc_key).nproc_per_node)
    import torch

    torch.set_float32_matmul_precision("high")
    module = importlib.import_module(f"textwsss.pipeline.{stage}")
    try:
        module.run(params, Workspace(ROOT))
    except USER_ERRORS as err:
        log.error("%s", err)
        raise SystemExit(1) from None
