"""Runs a stage script under torchrun when params ask for several processes per node."""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def relaunch_under_torchrun(nproc_per_node: int) -> None:
    """Replaces this process by `torchrun --nproc_per_node N <same script>` unless already under torchrun."""
    if nproc_per_node <= 1 or "LOCAL_RANK" in os.environ:
        return
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            *sys.argv]
    log.info("starting %d processes: %s", nproc_per_node, " ".join(args))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
