"""Registry fixtures: an open store on each backend, an artifact store in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    with SqlStore(store_url) as opened:
        yield opened


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")
