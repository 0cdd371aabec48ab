import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared (real datasets and models), or wherever EDGEKD_DATA points."""
    path = Path(os.environ.get("EDGEKD_DATA", REPO.parent / "shared"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("real data not found: set EDGEKD_DATA to the shared/ folder (datasets, teachers)")
    return path
