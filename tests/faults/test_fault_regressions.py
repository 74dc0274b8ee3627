"""Regressions: each test failed against the SDK before its fix."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from _platforms import AWAITSTEP, Platform, send_trigger
from _servers import FaultProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

MakeClient = Callable[..., wt.AsyncClient]


def _chain_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# 1. README ("Failure semantics"): a connection error chains no aiohttp exception, since
#    those quote the full URL; its message says what failed.
async def test_a_connection_error_chains_nothing_that_quotes_the_url(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)
    async with make_client(platform.provider(emulator), retry=retry) as client:
        ex = await client.trigger(platform.workflow)
        emulator.add_fault(Fault.drop(20, on="poll", platform=platform.emulated))
        with pytest.raises(wt.TransportError) as lost:
            await client.wait(ex)
        emulator.clear_faults()
    async with make_client(platform.provider(emulator, emulator.refused_url)) as client:
        with pytest.raises(wt.TransportError) as refused:
            await client.trigger(platform.workflow)
    for error in (lost.value, refused.value):
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__
    assert "lost the connection" in str(lost.value)
    assert "could not connect" in str(refused.value)


# 2. the "expected a JSON body ... but got <snippet>" message is not redacted
async def test_a_page_echoing_the_url_never_shows_a_secret(
    variant: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    async with make_client(variant.provider(emulator, proxy.url)) as client:
        errors: list[BaseException] = []
        if variant.polls:
            ex = await client.trigger(variant.workflow)
            proxy.add("echo", on="poll")
            with pytest.raises(wt.ProtocolError) as info:
                await client.wait(ex)
            errors.append(info.value)
        proxy.add("echo", on="trigger")
        try:
            await client.run(variant.workflow)
        except wt.WorkflowTriggerError as exc:
            errors.append(exc)
    text = "".join(_chain_text(e) for e in errors)
    assert [s for s in variant.secrets(emulator) if s in text] == []


# 3. a 200 status answer with no status in it is "still running" until the deadline
@pytest.mark.parametrize("document", [{}, {"success": True}, {"ok": True, "data": {}}], ids=repr)
async def test_a_status_answer_without_a_status_is_a_protocol_error(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    document: Any,
) -> None:
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("json", on="poll", document=document, count=1000)
        with pytest.raises(wt.ProtocolError):
            await client.wait(ex, timeout=1)


# 4. json.dumps' RecursionError escapes json_body
async def test_a_payload_nested_too_deep_is_refused_before_sending(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    payload: Any = []
    for _ in range(100_000):
        payload = [payload]
    async with make_client(any_platform.provider(emulator)) as client:
        with pytest.raises(wt.InvalidInputError):
            await send_trigger(client, any_platform, any_platform.workflow, payload)
    assert emulator.requests == 0


# 6. None passes the policies' validators, then the run crashes after the trigger went out
@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (wt.PollPolicy, "interval"),
        (wt.PollPolicy, "max_interval"),
        (wt.RetryPolicy, "backoff"),
        (wt.RetryPolicy, "max_backoff"),
    ],
)
def test_none_is_not_a_number_of_seconds(policy: Any, field: str) -> None:
    with pytest.raises(wt.InvalidInputError, match=field):
        policy(**{field: None})


async def test_a_none_poll_interval_does_not_crash_after_the_trigger(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    try:
        poll = wt.PollPolicy(interval=None)  # type: ignore[arg-type]
    except wt.InvalidInputError:
        return
    async with make_client(platform.provider(emulator), poll=poll) as client:
        await client.run(platform.workflow)  # TypeError, after the run was started


# 7. an infinite request/connect timeout passes validation, then aiohttp overflows
@pytest.mark.parametrize("option", ["request_timeout", "connect_timeout"])
async def test_an_infinite_timeout_is_refused_or_works(
    platform: Platform, emulator: Emulator, make_client: MakeClient, option: str
) -> None:
    try:
        client = make_client(platform.provider(emulator), **{option: math.inf})
    except wt.InvalidInputError:
        return
    async with client:
        assert (await client.run(platform.workflow)).ok


# 9. a password in base_url's userinfo shows in reprs, logs, events and exceptions
async def test_a_password_in_the_base_url_never_shows(
    platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="workflow_trigger")
    password = "pw_S3CR3T_userinfo"
    base_url = f"http://gateway:{password}@127.0.0.1:{emulator.port}"
    try:
        provider = platform.provider(emulator, base_url)
    except wt.InvalidInputError as exc:  # refusing it is fine too
        assert password not in str(exc)
        return
    events: list[wt.Event] = []
    texts = [repr(provider)]
    async with make_client(provider, on_event=events.append) as client:
        texts.append(repr(client))
        emulator.scenario(platform.workflow, Scenario(duration=0.0))
        await client.run(platform.workflow)
    texts += [repr(e) for e in events] + [r.getMessage() for r in caplog.records]
    assert [t for t in texts if password in t] == []


# 10. a payload of 1 MiB or more makes aiohttp warn (raw bytes body): under -W error,
#     the trigger raises a bare ResourceWarning
async def test_a_large_payload_is_sent_without_a_warning(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    if platform is AWAITSTEP:
        return
    async with make_client(platform.provider(emulator)) as client:
        await client.trigger(platform.workflow, {"data": "x" * (1024 * 1024)})
    assert emulator.triggers(platform.workflow) == 1


# 11. registering_grace=nan is accepted (nan < 0 is False)
def test_codika_refuses_a_nan_registering_grace(emulator: Emulator) -> None:
    with pytest.raises(wt.InvalidInputError, match="registering_grace"):
        wt.Codika(emulator.codika_instance_id, api_key="ck_x", registering_grace=math.nan)
