"""Fixtures of the fault-tolerance and security suite (tests/faults/).

``emulator`` is replaced by one holding this suite's own credentials (see
``_platforms.KEYS``) and the AwaitStep function ``score-lead``;
``make_client`` builds a fast client for any provider; ``proxy`` is a
``FaultProxy`` in front of the emulator; ``second_emulator`` is another host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _platforms import FAST, FAST_RETRY, KEYS, any_platform, platform, variant
from _servers import FaultProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator

__all__ = [
    "any_platform",
    "emulator",
    "make_client",
    "platform",
    "proxy",
    "second_emulator",
    "variant",
]


@pytest.fixture
async def emulator(anyio_backend: object) -> AsyncIterator[Emulator]:
    del anyio_backend
    async with Emulator(seed=0, awaitstep_functions=("score-lead",), **KEYS) as emu:
        yield emu


@pytest.fixture
async def second_emulator(anyio_backend: object) -> AsyncIterator[Emulator]:
    """Another host (another loopback port) that would accept the same credentials."""
    del anyio_backend
    async with Emulator(seed=1, awaitstep_functions=("score-lead",), **KEYS) as emu:
        yield emu


@pytest.fixture
async def proxy(emulator: Emulator) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(emulator.base_url) as server:
        yield server


@pytest.fixture
def make_client() -> Callable[..., wt.AsyncClient]:
    """``make_client(provider, **options)``: short intervals, a tiny backoff, a seeded
    jitter, and no client-side rate limit (the Runs API's default would space requests)."""

    def make(provider: wt.Provider, **kwargs: Any) -> wt.AsyncClient:
        kwargs.setdefault("poll", FAST)
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("seed", 0)
        kwargs.setdefault("rate_limit", 1000.0)
        return wt.AsyncClient(provider, **kwargs)

    return make
