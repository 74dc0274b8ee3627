"""Provider factories and request-log readers for the end-to-end tests.

Each factory points a provider at a running emulator with the credentials it
accepts; keyword arguments override any of them.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import aiohttp

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, RequestRecord

__all__ = [
    "SentBodies",
    "awaitstep_for",
    "body_of",
    "function_for",
    "logged",
    "pinkfish_for",
    "runs_api_for",
]


def runs_api_for(emu: Emulator, **kwargs: Any) -> wt.RunsApi:
    api_key = kwargs.pop("api_key", emu.runs_api_api_key)
    return wt.RunsApi(kwargs.pop("base_url", emu.base_url), api_key, **kwargs)


def awaitstep_for(emu: Emulator, **kwargs: Any) -> wt.AwaitStep:
    api_key = kwargs.pop("api_key", emu.awaitstep_api_key)
    connection_id = kwargs.pop("connection_id", emu.awaitstep_connection_id)
    kwargs.setdefault("base_url", emu.base_url)
    return wt.AwaitStep(api_key, connection_id, **kwargs)


def function_for(emu: Emulator, name: str, **kwargs: Any) -> wt.AwaitStepFunction:
    """A provider for the AwaitStep function ``name``, which the emulator now deploys."""
    emu.awaitstep_functions.add(name)
    return wt.AwaitStepFunction(url=emu.awaitstep_function_url(name), **kwargs)


def pinkfish_for(emu: Emulator, **kwargs: Any) -> wt.Pinkfish:
    api_key = kwargs.pop("api_key", emu.pinkfish_api_key)
    kwargs.setdefault("base_url", emu.base_url)
    return wt.Pinkfish(api_key, **kwargs)


def logged(emu: Emulator, operation: str | None = None) -> list[RequestRecord]:
    """The emulator's request log, only ``operation`` requests if given."""
    return [r for r in emu.request_log if operation is None or r.operation == operation]


def body_of(record: RequestRecord) -> Any:
    """The JSON body a request carried."""
    assert record.body is not None, f"{record.method} {record.path} carried no body"
    return json.loads(record.body)


class SentBodies:
    """Records the body of every request a session writes, each try apart: what the
    client sent, even where the emulator kept no body (a faulted try).

    Use it as ``aiohttp.ClientSession(trace_configs=[recorder.config])``.
    """

    def __init__(self) -> None:
        self._bodies: list[bytearray] = []
        self.config = aiohttp.TraceConfig()
        self.config.on_request_start.append(self._start)
        self.config.on_request_chunk_sent.append(self._chunk)

    async def _start(self, _: aiohttp.ClientSession, context: SimpleNamespace, __: Any) -> None:
        context.body = bytearray()
        self._bodies.append(context.body)

    async def _chunk(
        self,
        _: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        context.body.extend(params.chunk)

    def json(self) -> list[Any]:
        """The body of each request that carried one, parsed as JSON."""
        return [json.loads(body) for body in self._bodies if body]
