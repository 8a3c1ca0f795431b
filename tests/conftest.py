"""Suite-wide settings.

- Uninitialised memory is filled with NaN (``torch.empty`` & co.), so a kernel that reads memory it
  never wrote produces NaN and fails its parity test instead of passing by luck.
- One intra-op thread per test process: the suite runs with ``pytest -n 2`` on 2 cores, and small
  ops are faster and more stable single-threaded.
"""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
