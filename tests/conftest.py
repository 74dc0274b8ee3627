from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from _support import FAST, FAST_RETRY, codika_for

import workflow_trigger as wt
from workflow_trigger.testing import Emulator
from workflow_trigger.testing.fixtures import emulator

__all__ = ["emulator"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio


@pytest.fixture
def make_client(emulator: Emulator) -> Callable[..., wt.AsyncClient]:
    def make(provider: wt.Provider | None = None, **kwargs: Any) -> wt.AsyncClient:
        kwargs.setdefault("poll", FAST)
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("seed", 0)
        return wt.AsyncClient(provider or codika_for(emulator), **kwargs)

    return make


@pytest.fixture
async def client(make_client: Callable[..., wt.AsyncClient]) -> AsyncIterator[wt.AsyncClient]:
    async with make_client() as c:
        yield c
