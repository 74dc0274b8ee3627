"""Fixtures for the emulator's own tests: raw HTTP helpers for the platforms' routes.

These tests talk to the emulator with a bare aiohttp ``ClientSession``, never
with the SDK's client, so the emulator is checked against the documents alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
from multidict import CIMultiDictProxy

from workflow_trigger.testing import Emulator
from workflow_trigger.testing.fixtures import emulator

__all__ = [
    "HTTP",
    "Answer",
    "CodikaHTTP",
    "anyio_backend",
    "codika",
    "emulator",
    "http",
    "make_http",
]

_UNSET: Any = object()


@pytest.fixture
def anyio_backend() -> str:
    # The emulator is an aiohttp server: asyncio only.
    return "asyncio"


@attrs.frozen
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class CodikaHTTP:
    """Sends Codika requests to an emulator, authenticated with X-API-Key by default."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    def key_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.emu.codika_api_key}

    async def trigger(
        self,
        workflow: str,
        body: Any = _UNSET,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        instance: str | None = None,
    ) -> Answer:
        """POST a trigger; ``body`` is sent as JSON (default ``{"payload": {}}``), ``data`` raw."""
        if data is None:
            data = json.dumps({"payload": {}} if body is _UNSET else body).encode()
        instance = instance or self.emu.codika_instance_id
        return await self._send(
            "POST", f"/webhook/{instance}/{workflow}", data, headers, params, json_type=True
        )

    async def poll(
        self,
        execution_id: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        instance: str | None = None,
    ) -> Answer:
        instance = instance or self.emu.codika_instance_id
        return await self._send("GET", f"/status/{instance}/{execution_id}", None, headers, params)

    async def start(self, workflow: str, payload: Any = None) -> str:
        """Trigger with a payload and return the execution id (asserting a 200)."""
        answer = await self.trigger(workflow, {"payload": payload or {}})
        assert answer.status == 200, answer.body
        execution_id: str = answer.json["executionId"]
        return execution_id

    async def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        *,
        json_type: bool = False,
    ) -> Answer:
        sent = dict(self.key_headers() if headers is None else headers)
        if json_type:
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.emu.base_url + path, data=data, headers=sent, params=params
        ) as response:
            return Answer(response.status, response.headers, await response.read())


@pytest.fixture
async def codika(emulator: Emulator) -> AsyncIterator[CodikaHTTP]:
    async with aiohttp.ClientSession() as session:
        yield CodikaHTTP(session, emulator)


class HTTP:
    """Sends raw requests to an emulator; ``body`` goes as JSON, ``data`` as raw bytes."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    async def request(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``path`` is relative to the base URL, or a full URL (a result file's, say)."""
        sent = dict(headers or {})
        if body is not _UNSET:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        url = path if path.startswith("http") else self.emu.base_url + path
        async with self.session.request(method, url, data=data, headers=sent) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Answer:
        return await self.request("GET", path, headers=headers)

    async def post(
        self,
        path: str,
        body: Any = _UNSET,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        return await self.request("POST", path, body, data=data, headers=headers)


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[HTTP]:
    async with aiohttp.ClientSession() as session:
        yield HTTP(session, emulator)


@pytest.fixture
async def make_http(
    anyio_backend: object,
) -> AsyncIterator[Callable[..., Awaitable[HTTP]]]:
    """``await make_http(**emulator_kwargs)``: an HTTP helper on a new emulator, closed after."""
    del anyio_backend
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> HTTP:
            emu = await stack.enter_async_context(Emulator(**kwargs))
            return HTTP(session, emu)

        yield make
