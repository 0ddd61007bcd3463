from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.testing.cluster import TempCluster


@pytest.fixture
def cluster() -> Iterator[TempCluster]:
    """A fresh one-node cluster (fake hypervisor) with its own masterd."""
    c = TempCluster()
    try:
        yield c
    finally:
        c.close()
