import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VOC_MINI = (ROOT / ".." / "shared" / "voc-mini").resolve()
sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub from a test


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    if not VOC_MINI.is_dir():
        pytest.skip(f"voc-mini sample not found at {VOC_MINI}")
    return VOC_MINI


@pytest.fixture(scope="session")
def voc_data(voc_mini, tmp_path_factory):
    """voc-mini as the stages see it (a PreparedDataset)."""
    from vocmini import prepared

    return prepared(voc_mini, tmp_path_factory.mktemp("voc-mini") / "prepared")
