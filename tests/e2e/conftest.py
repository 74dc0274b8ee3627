"""Fixtures of the end-to-end tests (the shared ones are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio.from_thread
import pytest

from workflow_trigger.testing import Emulator


@pytest.fixture
def threaded_emulator() -> Iterator[Emulator]:
    """An emulator on its own event loop thread, so a test can block in ``wt.Client``."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Emulator(seed=0)) as emulator,
    ):
        yield emulator
