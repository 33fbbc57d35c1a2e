"""Shared start-up of every stage script: logging, params validation, the repository paths."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the stages run from a checkout even when the package is not installed

from textwsss.params import Params, ParamsError, load_params  # noqa: E402

PREPARED = ROOT / "data" / "prepared"
METRICS = ROOT / "reports" / "metrics"


def start(stage: str) -> Params:
    """Configures logging and returns validated params; exits non-zero with the message on bad params."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.WARNING)
    try:
        return load_params()
    except ParamsError as err:
        logging.getLogger(stage).error("%s", err)
        raise SystemExit(2) from None


def fail(stage: str, err: Exception) -> None:
    logging.getLogger(stage).error("%s", err)
    raise SystemExit(1)
