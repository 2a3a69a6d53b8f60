"""Shared fixtures. Real data is read in place from ../shared/data through ``shared_data``."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
def _seed_and_one_thread() -> Iterator[None]:
    """Seed, and pin the intra-op threads for each test (some libraries, e.g. UMAP, change them)."""
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("MEDSSL_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
