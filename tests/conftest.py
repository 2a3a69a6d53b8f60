"""Shared fixtures. Real data is read in place from ../shared/data through ``shared_data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public datasets (``../shared/data``); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} not found: put the shared datasets there "
            "or set MEDSSL_SHARED_DATA to their folder"
        )
    return SHARED_DATA


# One intra-op thread per test process: on a small shared machine extra threads spin and slow
# everything down; MEDSSL_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("MEDSSL_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
