"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The test models are tiny: one intra-op thread is faster than two, and keeps the
    # suite steady on a loaded 2-core machine. Subprocesses use torch's own default.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def serve():
    """Serve a folder on 127.0.0.1 (tests/local_http.py); returns its base URL."""
    from local_http import mirrors

    with mirrors() as start:
        yield start
