"""Faults on trigger POSTs, on every platform: never two runs.

The README's table "When a trigger is sent again": a trigger is resent after
a connection refused before sending and after a 429 on every platform; after
a 5xx, a reset or a timeout once sent, only on the Runs API with an
idempotency key (the platform then returns the existing run). Everywhere
else the error is raised and exactly one run, or none, exists.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _platforms import AWAITSTEP, KEYS, PINKFISH, PLATFORMS, RUNS_API, Platform, send_trigger
from _servers import FaultProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, RequestRecord, Scenario

MakeClient = Callable[..., wt.AsyncClient]


def triggers(emu: Emulator) -> list[RequestRecord]:
    return [r for r in emu.request_log if r.operation == "trigger"]


# -- 5xx and lost connections once the request was sent: never resent --------------------


async def test_a_5xx_before_the_run_started_is_raised_not_resent(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(Fault.server_error(1, 503, on="trigger", platform=any_platform.emulated))
    async with make_client(any_platform.provider(emulator)) as client:
        with pytest.raises(wt.ServerError) as info:
            await client.run(any_platform.workflow)
        assert client.requests_sent == 1
    assert info.value.status_code == 503
    assert emulator.trigger_requests == 1 and emulator.executions == []


async def test_a_5xx_after_the_run_started_never_yields_a_second_run(
    any_platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("replace", on="trigger", status=502)
    async with make_client(any_platform.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ServerError) as info:
            await client.run(any_platform.workflow)
        assert client.requests_sent == 1
    assert info.value.status_code == 502
    assert emulator.trigger_requests == 1
    assert emulator.triggers(any_platform.workflow) == 1  # the run exists: exactly one


@pytest.mark.parametrize("action", ["cut", "reset"], ids=["mid-body", "no-answer"])
async def test_a_reset_after_the_run_started_never_yields_a_second_run(
    any_platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    action: str,
) -> None:
    proxy.add(action, on="trigger")  # type: ignore[arg-type]
    async with make_client(any_platform.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.TransportError) as info:
            await client.run(any_platform.workflow)
        assert client.requests_sent == 1
    assert "POST" in str(info.value) and "lost the connection" in str(info.value)
    assert emulator.trigger_requests == 1
    assert emulator.triggers(any_platform.workflow) == 1


async def test_a_trigger_dropped_on_a_reused_connection_is_not_resent(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    async with make_client(any_platform.provider(emulator)) as client:
        await send_trigger(
            client, any_platform, any_platform.workflow
        )  # leaves a kept-alive connection
        emulator.add_fault(Fault.drop(1, on="trigger", platform=any_platform.emulated))
        with pytest.raises(wt.TransportError, match="lost the connection"):
            await send_trigger(client, any_platform, any_platform.workflow)
        assert client.requests_sent == 2
    # neither the SDK nor aiohttp sent the POST again
    assert emulator.trigger_requests == 2
    assert emulator.triggers(any_platform.workflow) == 1


async def test_a_trigger_slower_than_the_request_timeout_is_raised_not_resent(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(Fault.slow(1, delay=0.4, on="trigger", platform=any_platform.emulated))
    provider = any_platform.provider(emulator)
    async with make_client(provider, request_timeout=0.1) as client:
        with pytest.raises(wt.TransportError, match="timed out"):
            await send_trigger(client, any_platform, any_platform.workflow)
        assert client.requests_sent == 1
    # The client is done: whatever the platform makes of the request once its delay is
    # over (here, the connection is gone before it reads the body), nothing is resent.
    # Under load the server may see the one request only after the client gave up on it.
    with anyio.fail_after(5):
        await emulator.wait_until(lambda: emulator.trigger_requests >= 1)
    assert emulator.trigger_requests == 1 and len(emulator.executions) <= 1


# -- Runs API with an idempotency key: resent, one run ------------------------------------


def _runs_fault(kind: str, emulator: Emulator, proxy: FaultProxy) -> None:
    if kind == "5xx-before":
        emulator.add_fault(Fault.server_error(1, 503, on="trigger", platform="runs_api"))
    elif kind == "drop-before":
        emulator.add_fault(Fault.drop(1, on="trigger", platform="runs_api"))
    elif kind == "slow":
        emulator.add_fault(Fault.slow(1, delay=0.4, on="trigger", platform="runs_api"))
    elif kind == "5xx-after":
        proxy.add("replace", on="trigger", status=503)
    else:
        proxy.add(kind, on="trigger")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fault", ["5xx-before", "drop-before", "slow", "5xx-after", "cut", "reset"]
)
async def test_the_runs_api_with_a_key_resends_and_still_yields_one_run(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, fault: str
) -> None:
    emulator.scenario(RUNS_API.workflow, Scenario(duration=0.05, result={"order": 1}))
    _runs_fault(fault, emulator, proxy)
    events: list[wt.Event] = []
    provider = RUNS_API.provider(emulator, proxy.url)
    async with make_client(provider, request_timeout=0.2, on_event=events.append) as client:
        outcome = await client.run(RUNS_API.workflow, {"n": 1}, idempotency_key="order-1")
        if fault == "slow":  # a window for the first, slow request to end: no second run
            await anyio.sleep(0.5)
    assert outcome.ok and outcome.result == {"order": 1}
    assert len(emulator.executions) == 1
    assert outcome.execution is not None
    assert outcome.execution.execution_id == emulator.executions[0].id
    sent = [seen for seen in proxy.seen if seen.method == "POST"]
    assert len(sent) == 2 and emulator.trigger_requests == 2
    assert [json.loads(seen.body)["idempotencyKey"] for seen in sent] == ["order-1"] * 2
    retries = [e for e in events if isinstance(e, wt.RetryEvent)]
    assert len(retries) == 1 and retries[0].kind == "trigger"


@pytest.mark.parametrize("fault", ["5xx-after", "cut"])
async def test_the_runs_api_without_a_key_is_not_resent(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, fault: str
) -> None:
    _runs_fault(fault, emulator, proxy)
    async with make_client(RUNS_API.provider(emulator, proxy.url)) as client:
        with pytest.raises((wt.ServerError, wt.TransportError)):
            await client.run(RUNS_API.workflow)
    assert emulator.trigger_requests == 1 and len(emulator.executions) == 1


# -- 429: refused without acting, so resent everywhere ------------------------------------


async def test_a_429_on_a_trigger_is_resent_after_retry_after_in_seconds(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(
        Fault.rate_limited(2, retry_after=0.2, on="trigger", platform=any_platform.emulated)
    )
    async with make_client(any_platform.provider(emulator)) as client:
        outcome = await client.run(any_platform.workflow)
    assert outcome.ok
    sent = triggers(emulator)
    assert [r.status for r in sent][:2] == [429, 429] and len(sent) == 3
    assert all(b.received_at - a.received_at >= 0.2 for a, b in itertools.pairwise(sent))
    assert emulator.triggers(any_platform.workflow) == 1


async def test_a_429_on_a_trigger_is_resent_after_retry_after_as_an_http_date(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(
        Fault.rate_limited(
            1, retry_after=0.2, on="trigger", retry_after_date=True, platform=any_platform.emulated
        )
    )
    wall_offset = time.time() - time.monotonic()
    async with make_client(any_platform.provider(emulator)) as client:
        assert (await client.run(any_platform.workflow)).ok
    limited, accepted = triggers(emulator)
    assert limited.status == 429 and accepted.started is not None
    received = limited.received_at + wall_offset
    asked = math.ceil(received + 0.2) - received
    assert accepted.received_at - limited.received_at >= asked - 0.05
    assert emulator.triggers(any_platform.workflow) == 1


async def test_429s_outlasting_the_budget_raise_rate_limit_error_and_start_nothing(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(
        Fault.rate_limited(10, retry_after=0.01, on="trigger", platform=any_platform.emulated)
    )
    retry = wt.RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    async with make_client(any_platform.provider(emulator), retry=retry) as client:
        with pytest.raises(wt.RateLimitError) as info:
            await client.run(any_platform.workflow)
    assert info.value.status_code == 429 and info.value.retry_after == pytest.approx(0.01)
    assert emulator.trigger_requests == 3 and emulator.executions == []


# -- refused before sending: resent everywhere ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now: connecting is refused


async def test_a_trigger_refused_before_sending_is_resent_and_starts_one_run(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    port = _free_port()
    later = Emulator(seed=3, port=port, awaitstep_functions=("score-lead",), **KEYS)
    refused = anyio.Event()

    def on_event(event: wt.Event) -> None:
        if isinstance(event, wt.RetryEvent):
            refused.set()

    provider = any_platform.provider(emulator, f"http://127.0.0.1:{port}")
    retry = wt.RetryPolicy(attempts=30, backoff=0.05, max_backoff=0.1)
    try:
        async with make_client(provider, retry=retry, on_event=on_event) as client:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def start_later() -> None:
                        await refused.wait()
                        await later.start()

                    tg.start_soon(start_later)
                    ex = await send_trigger(client, any_platform, any_platform.workflow)
    finally:
        await later.close()
    assert later.trigger_requests == 1 and later.triggers(any_platform.workflow) == 1
    assert ex.workflow_id == any_platform.workflow


async def test_a_trigger_refused_at_every_try_raises_could_not_connect(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    retry = wt.RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    events: list[wt.Event] = []
    provider = any_platform.provider(emulator, emulator.refused_url)
    async with make_client(provider, retry=retry, on_event=events.append) as client:
        with pytest.raises(wt.TransportError, match="could not connect") as info:
            await send_trigger(client, any_platform, any_platform.workflow)
        assert client.requests_sent == 3
    assert "POST" in str(info.value)
    assert [e.attempt for e in events if isinstance(e, wt.RetryEvent)] == [2, 3]
    assert emulator.requests == 0


# -- other POSTs and the documented exception ---------------------------------------------


async def test_an_awaitstep_event_is_never_delivered_twice(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(AWAITSTEP.workflow, Scenario(duration=0.2, wait_for_event="approval"))
    async with make_client(AWAITSTEP.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(AWAITSTEP.workflow)
        proxy.add("replace", on="trigger", status=502)
        with pytest.raises(wt.ServerError):
            await client.send_event(ex, "approval", {"ok": True})
        proxy.add("cut", on="trigger")
        with pytest.raises(wt.TransportError):
            await client.send_event(ex, "approval", {"ok": True})
        proxy.add("replace", on="trigger", status=502)
        with pytest.raises(wt.ServerError):
            await client.pause(ex)  # POST .../pause: "trigger" for the proxy
    assert [len(e.events) for e in emulator.executions] == [2]  # one per call, none resent
    assert emulator.operation_requests("control") == 1


async def test_a_pinkfish_sync_trigger_may_outlast_the_request_timeout(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.3))
    provider = wt.Pinkfish(emulator.pinkfish_api_key, base_url=emulator.base_url, wait="sync")
    async with make_client(provider, request_timeout=0.1) as client:
        outcome = await client.run(PINKFISH.workflow)
        assert client.requests_sent == 1
    assert outcome.ok and outcome.polls == 0
    assert emulator.trigger_requests == 1


# -- trigger answers that break the platform's shape --------------------------------------

#: a trigger answer of the right JSON type without the id the run is followed by
NO_ID = {
    "codika": {"success": True, "message": "Execution started"},
    "runs_api": {"success": True, "data": {"status": "pending"}},
    "awaitstep": {"status": "queued"},
    "pinkfish": {},  # the ids are headers; the body is empty
}


@pytest.mark.parametrize("answer", ["html", "empty", "malformed", "list", "no-id"])
async def test_a_trigger_answer_of_the_wrong_shape_is_a_protocol_error(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    answer: str,
) -> None:
    if answer == "malformed":
        emulator.add_fault(Fault.malformed(1, on="trigger", platform=platform.emulated))
    elif answer == "list":
        proxy.add("json", on="trigger", document=[{"executionId": "1", "runId": "1"}])
    elif answer == "no-id":
        proxy.add("json", on="trigger", document=NO_ID[platform.kind])
    else:
        proxy.add(answer, on="trigger")  # type: ignore[arg-type]
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ProtocolError) as info:
            await client.run(platform.workflow)
        assert client.requests_sent == 1  # an answer came: nothing to resend
    assert "check base_url" in str(info.value) or "JSON" in str(info.value)
    assert emulator.executions == []


async def test_a_function_reply_is_free_form_so_html_or_empty_is_its_result(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    from _platforms import FUNCTION

    proxy.add("html", on="trigger")
    proxy.add("empty", on="trigger")
    async with make_client(FUNCTION.provider(emulator, proxy.url)) as client:
        page = await client.run(FUNCTION.workflow)
        empty = await client.run(FUNCTION.workflow)
    assert page.ok and isinstance(page.result, str) and "502 Bad Gateway" in page.result
    assert empty.ok and empty.result is None


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_trigger_answer_over_the_cap_is_refused_without_reading_on(
    any_platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    declared: bool,
) -> None:
    cap = 128 * 1024
    proxy.add("huge", on="trigger", size=64 * cap if declared else cap + 65536, declared=declared)
    provider = any_platform.provider(emulator, proxy.url)
    async with make_client(provider, max_body=cap) as client:
        with anyio.fail_after(5), pytest.raises(wt.ProtocolError, match="over the cap"):
            await client.run(any_platform.workflow)
        assert client.requests_sent == 1


# -- after a crash: the journal ----------------------------------------------------------


async def test_a_batch_cut_short_mid_trigger_resumes_as_the_readme_promises(
    any_platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    tmp_path: Path,
) -> None:
    """An item whose trigger was in flight when the batch died has only an intent in the
    journal: a re-run triggers it again, with the same idempotency key on the Runs API
    (one run), flagged ``possibly_duplicated`` elsewhere; the other items are untouched."""
    journal = tmp_path / "batch.sqlite"
    payloads = [{"k": 0}, {"k": 1}]
    emulator.add_fault(Fault.slow(1, delay=2, on="trigger", platform=any_platform.emulated))
    provider = any_platform.provider(emulator, proxy.url)

    async def batch(client: wt.AsyncClient) -> list[wt.Outcome[Any]]:
        items = client.run_many(
            any_platform.workflow, payloads, key=lambda p: p["k"], journal=journal, concurrency=1
        )
        return [outcome async for outcome in items]

    async with make_client(provider) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(batch, client)
                with anyio.fail_after(5):
                    await emulator.wait_until(lambda: emulator.trigger_requests >= 1)
                scope.cancel()  # the process "dies" while the first trigger is in flight
    async with make_client(provider) as client:
        outcomes = sorted(await batch(client), key=lambda o: o.key)
    assert [o.key for o in outcomes] == [0, 1] and all(o.ok for o in outcomes)
    assert outcomes[1].possibly_duplicated is False
    sent = [json.loads(s.body) for s in proxy.seen if s.method == "POST"]
    assert len(sent) == 3  # item 0 twice, item 1 once
    if any_platform.idempotent:
        keys = [body["idempotencyKey"] for body in sent]
        assert keys[0] == keys[1] != keys[2]
        assert outcomes[0].possibly_duplicated is False
        assert len([e for e in emulator.executions if e.payload == {"k": 0}]) == 1
    else:
        assert outcomes[0].possibly_duplicated is True


# -- refused by the platform: not started, not resent --------------------------------------


def _refuse(emu: Emulator, platform: Platform, refusal: str) -> tuple[type[wt.APIError], int]:
    if refusal == "auth":
        getattr(emu, platform.emulated).api_key = "a-key-the-sdk-does-not-hold"
        return wt.AuthenticationError, 401
    if refusal == "unknown":
        emu.strict_workflows = True
        emu.awaitstep.functions.clear()
        return wt.NotFoundError, 404
    if refusal == "inactive":
        emu.inactive = True
        return wt.APIError, 412
    if refusal == "draft":
        emu.runs_api_workflow_status[platform.workflow] = "draft"
        return wt.APIError, 400
    if refusal == "undeployed":
        emu.awaitstep_undeployed.add(platform.workflow)
        return wt.InvalidInputError, 400
    # a payload the platform's validation refuses
    if platform.kind == "runs_api":
        emu.scenario(platform.workflow, Scenario(required_inputs=("customerId",)))
        return wt.InvalidInputError, 400
    return wt.InvalidInputError, 422  # AwaitStep: params must be an object


REFUSALS = [
    ("codika", "auth"),
    ("codika", "unknown"),
    ("codika", "inactive"),
    ("runs_api", "auth"),
    ("runs_api", "unknown"),
    ("runs_api", "draft"),
    ("runs_api", "invalid"),
    ("awaitstep", "auth"),
    ("awaitstep", "unknown"),
    ("awaitstep", "undeployed"),
    ("awaitstep", "invalid"),
    ("pinkfish", "auth"),
    ("pinkfish", "unknown"),
    ("awaitstep_function", "unknown"),
]


@pytest.mark.parametrize(("kind", "refusal"), REFUSALS, ids=[f"{k}-{r}" for k, r in REFUSALS])
async def test_a_trigger_the_platform_refuses_starts_nothing_and_is_not_resent(
    emulator: Emulator, make_client: MakeClient, kind: str, refusal: str
) -> None:
    from _platforms import FUNCTION

    platform = next(p for p in (*PLATFORMS, FUNCTION) if p.kind == kind)
    provider = platform.provider(emulator)  # with the credential the platform now refuses
    error, status = _refuse(emulator, platform, refusal)
    payload = [1, 2] if refusal == "invalid" and kind == "awaitstep" else {"n": 1}
    async with make_client(provider) as client:
        with pytest.raises(error) as info:
            await client.run(platform.workflow, payload)
        assert client.requests_sent == 1
    assert info.value.status_code == status
    assert emulator.trigger_requests == 1 and emulator.executions == []


async def test_the_deadline_of_run_also_ends_a_hanging_trigger(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(Fault.slow(1, delay=3, on="trigger", platform=any_platform.emulated))
    async with make_client(any_platform.provider(emulator)) as client:
        started = anyio.current_time()
        with pytest.raises(wt.TransportError, match="before the deadline"):
            await client.run(any_platform.workflow, timeout=0.3)
        assert anyio.current_time() - started < 1.0
        assert client.requests_sent == 1
    assert emulator.trigger_requests == 1
