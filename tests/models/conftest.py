"""Model tests run single-threaded: their tensors are tiny, and on a busy CPU the intra-op thread
pool spends more time waiting for cores than computing (the test run is many times slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
