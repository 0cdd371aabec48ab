import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared (real datasets and models), or wherever EDGEKD_DATA points."""
    path = Path(os.environ.get("EDGEKD_DATA", REPO.parent / "shared"))
    return path if path.is_dir() else None


def skip_unless_ci(reason: str):
    """Skip a test that lacks a component; under CI=true, where .ci/run installs every component
    and ../shared sits beside the clone, fail instead: CI never passes by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        skip_unless_ci("real data not found: set EDGEKD_DATA to the shared/ folder (datasets, teachers)")
    return path


@pytest.fixture(scope="session")
def mnist(shared) -> Path:
    return shared / "datasets" / "mnist"
