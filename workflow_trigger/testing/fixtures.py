"""Pytest fixtures for the emulator, for the anyio pytest plugin.

Import them into a ``conftest.py``::

    from workflow_trigger.testing.fixtures import emulator  # noqa: F401

The emulator is an aiohttp server, so tests must run on the asyncio backend
(override ``anyio_backend`` to return ``"asyncio"`` if trio is installed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._emulator import Emulator

__all__ = ["emulator"]


@pytest.fixture
async def emulator(anyio_backend: object) -> AsyncIterator[Emulator]:
    """A running ``Emulator(seed=0)``, closed after the test."""
    # Requesting anyio_backend makes anyio's plugin run this fixture even in
    # strict mode; the argument itself is not needed.
    del anyio_backend
    async with Emulator(seed=0) as emu:
        yield emu
