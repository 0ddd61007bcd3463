"""Fixtures shared by the system tests."""

from __future__ import annotations

import pytest

from corral import testguest


@pytest.fixture(scope="session")
def guest() -> testguest.GuestImage:
    """The test guest, built (or taken from the cache) once per run."""
    return testguest.build()
