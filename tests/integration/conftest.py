"""Fixtures shared by the integration tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.config import Settings
from services.worker.app import build_worker


@pytest.fixture
def worker(fresh_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The results worker running in a thread on a database and topics of its own; open data goes
    to the test's own folder."""
    running = build_worker(fresh_settings)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield fresh_settings.model_copy(update={"opendata_dir": tmp_path / "opendata"})
    running.stop()
    thread.join(30)
