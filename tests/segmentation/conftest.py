"""Fixtures of the segmentation tests: small cohorts written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.segmentation.helpers import write_cohort


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cohorts")
    return {
        "real": write_cohort(base / "real", 4, "real", seed=0),
        "synthetic": write_cohort(base / "synthetic", 3, "syn", seed=100, kind="synthetic"),
        "healthy": write_cohort(base / "healthy", 2, "healthy", seed=200, tumor=False),
    }
