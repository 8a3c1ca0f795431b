"""Suite-wide settings.

- Uninitialised memory is filled with NaN (``torch.empty`` & co.), so a kernel that reads memory it
  never wrote produces NaN and fails its parity test instead of passing by luck.
- Hypothesis draws the same examples on every run (``derandomize``), so CI cannot fail on a draw a
  local run never saw; widen ``max_examples`` locally to search further.
- One intra-op thread per test process: the suite runs with ``pytest -n 2`` on 2 cores, and small
  ops are faster and more stable single-threaded.
"""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

settings.register_profile("linearlab", derandomize=True)
settings.load_profile("linearlab")

os.environ.setdefault("MPLBACKEND", "Agg")
torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# the titles and abstracts of the papers the project implements (one text dump), beside the repository
SHARED_SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"


@pytest.fixture
def etth1_csv() -> Path:
    """``../shared/data/ETT-small/ETTh1.csv``; a test using it skips, with the reason, in a clone
    without the shared data (CI has it; the data is never committed)."""
    path = SHARED_DATA / "ETT-small" / "ETTh1.csv"
    if not path.is_file():
        pytest.skip(f"needs ../shared/data ({path} absent)")
    return path


@pytest.fixture
def seed_dir() -> Path:
    """``../shared/seed``; a test using it skips, with the reason, in a clone without it."""
    if not SHARED_SEED.is_dir() or not any(SHARED_SEED.glob("*.txt")):
        pytest.skip(f"needs ../shared/seed ({SHARED_SEED} absent or without .txt files)")
    return SHARED_SEED
