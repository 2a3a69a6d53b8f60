"""Harness tests run single-threaded: the shared CI machines have 2 cores, and tiny convolutions are far
slower with threads fighting over them."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
