"""Bad input is refused with a documented error before any request, on every platform.

Each case raises a ``workflow_trigger.errors`` class (``InvalidInputError``
with ``status_code`` None, ``PayloadTooLarge``, ``UnsupportedOperation``) and
the emulator has seen no request at all. Identifiers that reach a URL are
either refused or percent-encoded so that they cannot reach another
endpoint: the emulator's ``request_log`` shows where each request landed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
from _platforms import AWAITSTEP, PINKFISH, PLATFORMS, Platform, send_trigger
from _servers import FaultProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator

MakeClient = Callable[..., wt.AsyncClient]
MiB = 1024 * 1024


def refused_locally(error: BaseException) -> None:
    assert isinstance(error, wt.WorkflowTriggerError)
    if isinstance(error, wt.APIError):
        assert error.status_code is None


# -- workflow ids -------------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", ["", "   ", "\t", None, 123, b"wf", ["wf"]], ids=repr)
@pytest.mark.parametrize("method", ["trigger", "run"])
async def test_empty_or_non_string_workflow_ids_are_refused(
    any_platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    workflow_id: Any,
    method: str,
) -> None:
    # a function's trigger() is refused whatever the id: its reply is the result
    pollable = any_platform.polls or method == "run"
    refused = wt.InvalidInputError if pollable else wt.UnsupportedOperation
    async with make_client(any_platform.provider(emulator)) as client:
        with pytest.raises(refused) as info:
            await getattr(client, method)(workflow_id, {})
        assert client.requests_sent == 0
    if pollable:
        refused_locally(info.value)
    assert emulator.requests == 0


HOSTILE_IDS = [
    "a/b",
    "../status/pi_test/x",
    "../../api/v1/runs/x",
    "wf/../../runs/x",
    "wf?api_key=stolen",
    "wf#fragment",
    "wf%2F..%2Fx",
    "%2e%2e",
    "a\\..\\b",
    "wf;x=1",
    "ü ß/€",
    "..",
    ".",
    "wf\n",
    "wf\x00",
    "wf\r\nX-Injected: 1",
]


@pytest.mark.parametrize("workflow_id", HOSTILE_IDS, ids=repr)
async def test_ids_that_would_walk_the_url_are_refused_or_stay_one_segment(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient, workflow_id: str
) -> None:
    async with make_client(any_platform.provider(emulator)) as client:
        try:
            await send_trigger(client, any_platform, workflow_id, {})
        except wt.InvalidInputError as exc:
            refused_locally(exc)
            assert emulator.requests == 0
            return
    [record] = emulator.request_log
    assert record.method == "POST" and record.operation == "trigger"
    if any_platform.polls:
        assert record.workflow_id == workflow_id  # one path segment, decoded back whole
        assert emulator.triggers(workflow_id) == 1
    else:  # a function's name only labels the Execution: the URL is the function's
        assert record.path == "/fn/score-lead"


@pytest.mark.parametrize("execution_id", HOSTILE_IDS, ids=repr)
async def test_hostile_execution_ids_in_a_handle_are_refused_or_stay_one_segment(
    platform: Platform, emulator: Emulator, make_client: MakeClient, execution_id: str
) -> None:
    forged = platform.execution(emulator, execution_id)
    async with make_client(platform.provider(emulator)) as client:
        try:
            await client.status(forged)
        except wt.InvalidInputError as exc:
            refused_locally(exc)
            assert emulator.requests == 0
            return
        except wt.NotFoundError:
            pass
    [record] = emulator.request_log
    assert record.method == "GET" and record.operation == "poll"
    assert record.execution_id == execution_id


@pytest.mark.parametrize("extra", ["../x", "a/b", "..", "x?y"], ids=repr)
async def test_hostile_platform_ids_in_extras_are_refused_or_stay_one_segment(
    platform: Platform, emulator: Emulator, make_client: MakeClient, extra: str
) -> None:
    name = {"codika": "process_instance_id", "pinkfish": "automation_id"}.get(platform.kind)
    if name is None:  # Runs API and AwaitStep put no extras in their URLs
        name = "instance_id"
    forged = platform.execution(emulator, "1234", **{name: extra})
    async with make_client(platform.provider(emulator)) as client:
        try:
            await client.status(forged)
        except wt.InvalidInputError as exc:
            refused_locally(exc)
            assert emulator.requests == 0
            return
        except wt.NotFoundError:
            pass
    [record] = emulator.request_log
    assert record.method == "GET" and record.operation == "poll"
    assert record.execution_id == "1234"


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("codika", {"success": True, "executionId": "../../webhook/pi_test/wf-codika"}),
        ("runs_api", {"success": True, "data": {"runId": "../workflows/wf-runs/run"}}),
        ("awaitstep", {"id": "../../wf-await/trigger", "status": "queued"}),
        ("pinkfish", {"X-Pf-Run-Id": "../../../triggers/x", "X-Pf-Automation-Id": "a/b"}),
    ],
)
async def test_a_hostile_id_in_a_trigger_answer_cannot_steer_the_polls(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, kind: str, answer: Any
) -> None:
    platform = next(p for p in PLATFORMS if p.kind == kind)
    if kind == "pinkfish":  # its ids come in headers
        proxy.add("empty", on="trigger", headers=answer)
    else:
        proxy.add("json", on="trigger", document=answer)
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        try:
            snapshot = await client.status(ex)
        except wt.NotFoundError:
            pass
        else:  # Codika: a 404 inside the registering grace is "still registering"
            assert snapshot.raw_status == "registering"
    assert emulator.trigger_requests == 0 and emulator.executions == []
    assert [(r.method, r.operation) for r in emulator.request_log] == [("GET", "poll")]
    assert emulator.request_log[0].execution_id == ex.execution_id


# -- payloads -----------------------------------------------------------------------------


def _circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


BAD_PAYLOADS = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "nested-nan": {"x": [1, {"y": math.nan}]},
    "nested-inf": {"x": math.inf},
    "set": {"x": {1, 2}},
    "bytes": b"raw",
    "datetime": {"at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)},
    "decimal": {"price": decimal.Decimal("1.10")},
    "object": object(),
    "function": print,
    "tuple-key": {(1, 2): "x"},
    "circular": _circular(),
    "lone-surrogate": {"text": "\ud800"},
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
async def test_payloads_that_are_not_json_are_refused(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient, payload: Any
) -> None:
    async with make_client(any_platform.provider(emulator)) as client:
        with pytest.raises(wt.InvalidInputError, match=r"JSON|Unicode") as info:
            await client.run(any_platform.workflow, payload)
    refused_locally(info.value)
    assert emulator.requests == 0


@pytest.mark.parametrize("payload", [math.nan, {"big": "x" * 200_000}], ids=["nan", "too-large"])
async def test_an_awaitstep_event_payload_is_checked_like_params(
    emulator: Emulator, make_client: MakeClient, payload: Any
) -> None:
    forged = AWAITSTEP.execution(emulator, "run_1", instance_id="inst_1")
    async with make_client(AWAITSTEP.provider(emulator)) as client:
        with pytest.raises(wt.InvalidInputError) as info:
            await client.send_event(forged, "approval", payload)
    refused_locally(info.value)
    assert emulator.requests == 0


def _params_of_size(size: int) -> dict[str, str]:
    """A dict whose compact JSON is exactly ``size`` bytes (and characters)."""
    overhead = len('{"data":""}')
    return {"data": "x" * (size - overhead)}


async def test_awaitstep_params_at_the_limit_are_sent_and_one_byte_over_refused(
    emulator: Emulator, make_client: MakeClient
) -> None:
    async with make_client(AWAITSTEP.provider(emulator)) as client:
        with pytest.raises(wt.PayloadTooLarge, match="102,400") as info:
            await client.trigger(AWAITSTEP.workflow, _params_of_size(102_401))
        refused_locally(info.value)
        assert isinstance(info.value, wt.InvalidInputError)
        assert emulator.requests == 0
        await client.trigger(AWAITSTEP.workflow, _params_of_size(102_400))
    assert emulator.triggers(AWAITSTEP.workflow) == 1  # the platform took it


async def test_large_payloads_are_sent_where_no_limit_is_documented(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    """Codika, the Runs API and Pinkfish document no payload limit: the SDK adds none."""
    if platform is AWAITSTEP:
        return
    async with make_client(platform.provider(emulator)) as client:
        await client.trigger(platform.workflow, {"data": "x" * (MiB // 2)})
    assert emulator.triggers(platform.workflow) == 1


# -- base URLs ----------------------------------------------------------------------------

BAD_BASE_URLS = [
    "api.example.com",
    "//api.example.com",
    "http://",
    "https://",
    "http:///path",
    "ftp://api.example.com",
    "file:///etc/passwd",
    "mailto:ops@example.com",
    "",
    "https://api.example.com?x=1",
    "https://api.example.com#top",
    "https://api.example.com:0",
    "https://api.example.com:99999",
    "https://api.example.com:port",
    "http://[::1",
    None,
    42,
]


@pytest.mark.parametrize("base_url", BAD_BASE_URLS, ids=repr)
def test_a_base_url_without_scheme_or_host_is_refused(
    any_platform: Platform, emulator: Emulator, base_url: Any
) -> None:
    with pytest.raises(wt.InvalidInputError) as info:
        any_platform.build(emulator, base_url)
    refused_locally(info.value)
    assert emulator.requests == 0


# -- intervals and timeouts ---------------------------------------------------------------

BAD_SECONDS = [0, -1, -0.5, math.nan, "5"]


@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
@pytest.mark.parametrize("field", ["interval", "max_interval", "timeout"])
def test_poll_policy_refuses_zero_negative_and_non_numbers(field: str, value: Any) -> None:
    with pytest.raises(wt.InvalidInputError, match=field):
        wt.PollPolicy(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", math.inf),
        ("max_interval", math.inf),
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("jitter", math.nan),
        ("multiplier", 0),
        ("multiplier", 0.5),
        ("multiplier", -2),
        ("multiplier", math.nan),
        ("multiplier", math.inf),
    ],
)
def test_poll_policy_refuses_other_nonsense(field: str, value: Any) -> None:
    with pytest.raises(wt.InvalidInputError, match=field):
        wt.PollPolicy(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("attempts", -1),
        ("attempts", 1.5),
        ("attempts", True),
        ("attempts", "3"),
        ("backoff", 0),
        ("backoff", -1),
        ("backoff", math.nan),
        ("backoff", math.inf),
        ("max_backoff", 0),
        ("max_backoff", -0.1),
        ("max_backoff", math.nan),
    ],
)
def test_retry_policy_refuses_zero_negative_and_non_numbers(field: str, value: Any) -> None:
    with pytest.raises(wt.InvalidInputError, match=field):
        wt.RetryPolicy(**{field: value})


CLIENT_OPTIONS = [
    ("request_timeout", 0),
    ("request_timeout", -1),
    ("request_timeout", math.nan),
    ("request_timeout", "30"),
    ("request_timeout", None),
    ("connect_timeout", 0),
    ("connect_timeout", -1),
    ("connect_timeout", math.nan),
    ("rate_limit", 0),
    ("rate_limit", -5),
    ("rate_limit", math.nan),
    ("max_concurrency", 0),
    ("max_concurrency", -1),
    ("max_concurrency", 1.5),
    ("max_connections", 0),
    ("max_body", 0),
    ("max_body", -1),
    ("on_event", "print"),
]


@pytest.mark.parametrize(("option", "value"), CLIENT_OPTIONS)
def test_client_options_refuse_zero_negative_and_non_numbers(
    any_platform: Platform, emulator: Emulator, option: str, value: Any
) -> None:
    with pytest.raises(wt.InvalidInputError, match=option):
        wt.AsyncClient(any_platform.provider(emulator), **{option: value})
    assert emulator.requests == 0


@pytest.mark.parametrize("timeout", [0, -1, -0.01, math.nan, "10"], ids=repr)
async def test_wait_run_watch_and_run_many_refuse_bad_timeouts(
    platform: Platform, emulator: Emulator, make_client: MakeClient, timeout: Any
) -> None:
    forged = platform.execution(emulator, "1234")
    async with make_client(platform.provider(emulator)) as client:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.wait(forged, timeout=timeout),
            lambda: client.run(platform.workflow, timeout=timeout),
            lambda: anext(client.watch(forged, timeout=timeout)),
            lambda: anext(client.run_many(platform.workflow, [{}], timeout=timeout)),
        ]
        for call in calls:
            with pytest.raises(wt.InvalidInputError, match="timeout"):
                await call()
        with pytest.raises(wt.InvalidInputError, match="concurrency"):
            client.run_many(platform.workflow, [{}], concurrency=0)
        with pytest.raises(wt.InvalidInputError, match="max_bytes"):
            await client.download(
                wt.Artifact(name="f", url=f"{emulator.base_url}/files/x/f"), max_bytes=0
            )
    assert emulator.requests == 0


def test_codika_refuses_a_negative_registering_grace(emulator: Emulator) -> None:
    with pytest.raises(wt.InvalidInputError, match="registering_grace"):
        wt.Codika(emulator.codika_instance_id, api_key="ck_x", registering_grace=-1)


# -- handles from elsewhere ---------------------------------------------------------------


def _controls(client: wt.AsyncClient, ex: Any) -> list[Callable[[], Awaitable[Any]]]:
    return [
        lambda: client.status(ex),
        lambda: client.wait(ex),
        lambda: anext(client.watch(ex)),
        lambda: client.cancel(ex),
        lambda: client.pause(ex),
        lambda: client.resume(ex),
        lambda: client.send_event(ex, "approval", {}),
    ]


@pytest.mark.parametrize("other", [*PLATFORMS, "function"], ids=lambda p: getattr(p, "name", p))
async def test_an_execution_of_another_platform_is_refused_by_every_method(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient, other: Any
) -> None:
    if other == "function":
        other = attrs.evolve(PINKFISH, kind="awaitstep_function")
    if other.kind == any_platform.kind:
        return
    foreign = wt.Execution.from_token(other.execution(emulator, "1234").token())
    async with make_client(any_platform.provider(emulator)) as client:
        for call in _controls(client, foreign):
            with pytest.raises(wt.InvalidInputError, match=other.kind) as info:
                await call()
            assert any_platform.kind in str(info.value)
    assert emulator.requests == 0


@pytest.mark.parametrize(
    "handle", [None, "wt1.abc", {"execution_id": "1"}, 1234], ids=["none", "token", "dict", "int"]
)
async def test_something_that_is_not_an_execution_is_refused(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient, handle: Any
) -> None:
    async with make_client(any_platform.provider(emulator)) as client:
        for call in _controls(client, handle):
            with pytest.raises(wt.InvalidInputError, match="Execution"):
                await call()
    assert emulator.requests == 0


@pytest.mark.parametrize(
    "token", ["", "wt1.", "wt1.!!!", "wt1.e30", "wt2.abc", "eyJwIjoiY29kaWthIn0"], ids=repr
)
def test_a_corrupt_token_is_refused(token: str) -> None:
    with pytest.raises(wt.InvalidInputError, match="token"):
        wt.Execution.from_token(token)


async def test_operations_a_platform_lacks_send_nothing(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    own = any_platform.execution(emulator, "1234", instance_id="inst_1")
    supported = {
        "awaitstep": {"cancel", "pause", "resume", "send_event", "status", "wait", "watch"},
        "codika": {"status", "wait", "watch"},
        "runs_api": {"status", "wait", "watch"},
        "pinkfish": {"status", "wait", "watch"},
        "awaitstep_function": set(),
    }[any_platform.kind]
    names = ["status", "wait", "watch", "cancel", "pause", "resume", "send_event"]
    async with make_client(any_platform.provider(emulator)) as client:
        for name, call in zip(names, _controls(client, own), strict=True):
            if name in supported:
                continue
            with pytest.raises(wt.UnsupportedOperation):
                await call()
        if any_platform.kind != "pinkfish":
            artifact = wt.Artifact(name="f", url=f"{emulator.base_url}/files/x/f")
            with pytest.raises(wt.UnsupportedOperation):
                await client.download(artifact)
    assert emulator.requests == 0


async def test_options_a_platform_lacks_are_refused_not_ignored(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    async with make_client(any_platform.provider(emulator)) as client:
        if not any_platform.idempotent:
            with pytest.raises(wt.InvalidInputError, match="idempotency"):
                await send_trigger(
                    client, any_platform, any_platform.workflow, idempotency_key="k1"
                )
        else:
            with pytest.raises(wt.InvalidInputError, match="idempotency_key"):
                await send_trigger(
                    client, any_platform, any_platform.workflow, idempotency_key="  "
                )
        if any_platform.kind in ("codika", "pinkfish", "awaitstep_function"):
            with pytest.raises(wt.InvalidInputError, match="connection"):
                await send_trigger(
                    client, any_platform, any_platform.workflow, connection_id="conn_1"
                )
    assert emulator.requests == 0


async def test_a_pinkfish_handle_without_its_automation_id_is_refused(
    emulator: Emulator, make_client: MakeClient
) -> None:
    bare = attrs.evolve(PINKFISH.execution(emulator, "1234"), extras={})
    async with make_client(PINKFISH.provider(emulator)) as client:
        with pytest.raises(wt.InvalidInputError, match="automation_id"):
            await client.wait(bare)
        with pytest.raises(wt.InvalidInputError, match="Artifact"):
            await client.download("https://files.example.com/a.txt")  # type: ignore[call-overload]
    assert emulator.requests == 0


def _params_of_units(units: int) -> dict[str, str]:
    """Params whose JSON is exactly ``units`` UTF-16 code units long, mostly non-ASCII:
    "é" is one unit (two UTF-8 bytes), "😀" two units (four bytes)."""
    text = "😀" * 1000 + "é" * (units - len('{"data":""}') - 2000)
    return {"data": text}


async def test_awaitstep_counts_its_limit_as_the_platform_does(
    emulator: Emulator, make_client: MakeClient
) -> None:
    """``JSON.stringify(params).length``: UTF-16 code units, not UTF-8 bytes."""
    async with make_client(AWAITSTEP.provider(emulator)) as client:
        with pytest.raises(wt.PayloadTooLarge):
            await client.trigger(AWAITSTEP.workflow, _params_of_units(102_401))
        assert emulator.requests == 0
        await client.trigger(AWAITSTEP.workflow, _params_of_units(102_400))  # ~200 KB of UTF-8
    assert emulator.triggers(AWAITSTEP.workflow) == 1  # and the platform took it
