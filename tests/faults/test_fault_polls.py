"""Faults while polling, on every platform: what the README's "Failure semantics" promise.

Status polls (and Pinkfish's results fetch) are GETs: retried on 5xx, 429
(at least ``Retry-After``, in seconds or as an HTTP date) and connection
errors within ``RetryPolicy.attempts``, then the last error is raised. A
response that breaks the platform's shape is a ``ProtocolError``, and the run
goes on remotely: waiting again on the same ``Execution`` works.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import attrs
import pytest
from _platforms import KEYS, PINKFISH, Platform
from _servers import FaultProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, RequestRecord, Scenario

MakeClient = Callable[..., wt.AsyncClient]


def records(emu: Emulator, operation: str) -> list[RequestRecord]:
    return [r for r in emu.request_log if r.operation == operation]


def gaps(found: list[RequestRecord]) -> list[float]:
    return [b.received_at - a.received_at for a, b in itertools.pairwise(found)]


# -- 5xx bursts -------------------------------------------------------------------------


async def test_a_burst_of_5xx_on_polls_is_survived(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05, result={"n": 1}))
    for status in (500, 502, 503):
        emulator.add_fault(Fault.server_error(1, status, on="poll", platform=platform.emulated))
    if platform.fetches_results:
        emulator.add_fault(Fault.server_error(2, 504, on="result", platform=platform.emulated))
    events: list[wt.Event] = []
    async with make_client(platform.provider(emulator), on_event=events.append) as client:
        outcome = await client.run(platform.workflow, {"n": 1})
    assert outcome.ok and outcome.execution is not None
    assert emulator.triggers(platform.workflow) == 1 and emulator.trigger_requests == 1
    assert emulator.polls(outcome.execution.execution_id) == outcome.polls + 3
    if platform.fetches_results:
        assert [r.status for r in records(emulator, "result")] == [504, 504, 200]
    assert emulator.faults_remaining == 0
    retries = [e for e in events if isinstance(e, wt.RetryEvent)]
    expected = ["HTTP 500", "HTTP 502", "HTTP 503"]
    assert [e.reason for e in retries] == expected + (["HTTP 504"] * 2 * platform.fetches_results)


# -- 429 and Retry-After ------------------------------------------------------------------


async def test_a_429_storm_on_polls_honours_retry_after_in_seconds(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    emulator.add_fault(
        Fault.rate_limited(3, retry_after=0.2, on="poll", platform=platform.emulated)
    )
    async with make_client(platform.provider(emulator)) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.ok
    polls = records(emulator, "poll")
    assert [r.status for r in polls[:4]] == [429, 429, 429, 200]
    assert all(gap >= 0.2 for gap in gaps(polls[:4])), gaps(polls[:4])
    assert emulator.triggers(platform.workflow) == 1


async def test_a_429_on_a_poll_honours_retry_after_as_an_http_date(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    emulator.add_fault(
        Fault.rate_limited(
            1, retry_after=0.2, on="poll", retry_after_date=True, platform=platform.emulated
        )
    )
    wall_offset = time.time() - time.monotonic()
    async with make_client(platform.provider(emulator)) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.ok
    limited, answered = records(emulator, "poll")[:2]
    assert (limited.status, answered.status) == (429, 200)
    # The date is the next whole second after (answer time + 0.2 s): the client must not
    # come back before it, whatever the backoff policy says.
    received = limited.received_at + wall_offset
    asked = math.ceil(received + 0.2) - received
    assert answered.received_at - limited.received_at >= asked - 0.05


async def test_429s_outlasting_the_budget_raise_rate_limit_error_with_the_hint(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    emulator.add_fault(
        Fault.rate_limited(10, retry_after=0.01, on="poll", platform=platform.emulated)
    )
    retry = wt.RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    async with make_client(platform.provider(emulator), retry=retry) as client:
        ex = await client.trigger(platform.workflow)
        with pytest.raises(wt.RateLimitError) as info:
            await client.wait(ex)
    assert info.value.status_code == 429
    assert info.value.retry_after is not None and info.value.retry_after == pytest.approx(0.01)
    assert emulator.polls(ex.execution_id) == 3


# -- slow answers and hanging requests ----------------------------------------------------


async def test_a_poll_slower_than_the_request_timeout_is_retried(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05))
    emulator.add_fault(Fault.slow(1, delay=1.0, on="poll", platform=platform.emulated))
    events: list[wt.Event] = []
    provider = platform.provider(emulator)
    async with make_client(provider, request_timeout=0.25, on_event=events.append) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.ok and outcome.execution is not None
    retries = [e for e in events if isinstance(e, wt.RetryEvent)]
    # the slow poll timed out and was retried; on a loaded machine (CI) a second,
    # unfaulted poll may time out too, so the count is a floor, not exact
    assert retries and "timed out" in retries[0].reason
    assert all(r.method == "GET" for r in retries)
    assert emulator.polls(outcome.execution.execution_id) == outcome.polls + len(retries)


async def test_poll_timeout_fires_on_time_while_a_poll_hangs(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=60))
    async with make_client(platform.provider(emulator)) as client:
        ex = await client.trigger(platform.workflow)
        emulator.add_fault(Fault.slow(1, delay=3, on="poll", platform=platform.emulated))
        started = anyio.current_time()
        with pytest.raises(wt.PollTimeout) as info:
            await client.wait(ex, timeout=0.3)
        took = anyio.current_time() - started
        polls = emulator.polls(ex.execution_id)
        # PollTimeout says the run may go on: once it ends, waiting again gets its outcome
        emulator.executions[0].advance(60)
        assert (await client.wait(ex)).ok
    assert 0.3 <= took < 1.0  # well before the hanging answer (3 s)
    assert info.value.execution == ex and info.value.snapshot is None
    assert ex.execution_id in str(info.value)
    assert polls == 1  # the hanging one: no request started after the deadline


async def test_poll_timeout_fires_on_time_while_the_results_fetch_hangs(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0))
    emulator.add_fault(Fault.slow(1, delay=3, on="result", platform="pinkfish"))
    async with make_client(PINKFISH.provider(emulator)) as client:
        started = anyio.current_time()
        with pytest.raises(wt.PollTimeout):
            await client.run(PINKFISH.workflow, timeout=0.4)
        assert anyio.current_time() - started < 1.2
    assert emulator.operation_requests("result") == 1


async def test_poll_timeout_fires_while_retries_wait_out_a_long_retry_after(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=60))
    emulator.add_fault(Fault.rate_limited(1, retry_after=30, on="poll", platform=platform.emulated))
    async with make_client(platform.provider(emulator)) as client:
        started = anyio.current_time()
        with pytest.raises(wt.PollTimeout):
            await client.run(platform.workflow, timeout=0.3)
        assert anyio.current_time() - started < 1.0
    assert emulator.poll_requests == 1


# -- connections lost ---------------------------------------------------------------------


async def test_a_poll_dropped_before_any_answer_is_retried(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05))
    # aiohttp resends a GET dropped on a reused connection once by itself: two drops
    # make the SDK see one.
    emulator.add_fault(Fault.drop(2, on="poll", platform=platform.emulated))
    events: list[wt.Event] = []
    async with make_client(platform.provider(emulator), on_event=events.append) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.ok
    assert emulator.faults_remaining == 0
    assert any(isinstance(e, wt.RetryEvent) and e.method == "GET" for e in events)
    assert emulator.triggers(platform.workflow) == 1


async def test_a_poll_reset_mid_body_is_retried(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05))
    proxy.add("cut", on="poll", count=2)
    if platform.fetches_results:
        proxy.add("cut", on="result", count=1)
    events: list[wt.Event] = []
    provider = platform.provider(emulator, proxy.url)
    async with make_client(provider, on_event=events.append) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.ok and proxy.armed == 0
    reasons = [e.reason for e in events if isinstance(e, wt.RetryEvent)]
    assert len(reasons) == 2 + platform.fetches_results
    assert all("lost the connection" in reason for reason in reasons)
    assert emulator.triggers(platform.workflow) == 1


# -- the retry budget ---------------------------------------------------------------------


async def test_poll_retries_stop_at_the_budget_and_raise_the_last_error(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    for status in (500, 502, 503, 500, 500):
        emulator.add_fault(Fault.server_error(1, status, on="poll", platform=platform.emulated))
    retry = wt.RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    events: list[wt.Event] = []
    provider = platform.provider(emulator)
    async with make_client(provider, retry=retry, on_event=events.append) as client:
        ex = await client.trigger(platform.workflow)
        with pytest.raises(wt.ServerError) as info:
            await client.wait(ex)
        # the run goes on remotely: waiting again on the same handle gets its outcome
        assert (await client.wait(ex)).ok
    assert info.value.status_code == 503  # the last of the three tries
    assert ex.execution_id in str(info.value)
    assert [e.attempt for e in events if isinstance(e, wt.RetryEvent)] == [2, 3, 2, 3]


async def test_poll_connection_errors_stop_at_the_budget_and_waiting_goes_on(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)
    async with make_client(platform.provider(emulator), retry=retry) as client:
        ex = await client.trigger(platform.workflow)
        emulator.add_fault(Fault.drop(20, on="poll", platform=platform.emulated))
        with pytest.raises(wt.TransportError, match="lost the connection") as info:
            await client.wait(ex)
        assert client.requests_sent == 1 + 2
        emulator.clear_faults()
        assert (await client.wait(ex)).ok  # the run went on: wait again
    assert "GET" in str(info.value) and ex.execution_id in str(info.value)


# -- answers that break the platform's shape ----------------------------------------------


async def test_an_html_page_instead_of_a_status_is_a_protocol_error_and_waiting_goes_on(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05))
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("html", on="poll")
        with pytest.raises(wt.ProtocolError, match="JSON"):
            await client.wait(ex)
        assert client.requests_sent == 2  # not retried: an answer came, it is just wrong
        outcome = await client.wait(ex)  # the run went on: wait again on the same handle
    assert outcome.ok
    assert emulator.triggers(platform.workflow) == 1


async def test_an_html_502_from_a_proxy_is_retried_then_a_server_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0))
    retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)
    async with make_client(platform.provider(emulator, proxy.url), retry=retry) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("html", on="poll", status=502, count=2)
        with pytest.raises(wt.ServerError) as info:
            await client.wait(ex)
    assert info.value.status_code == 502
    assert "<html" not in str(info.value)


async def test_a_malformed_status_body_is_a_protocol_error(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.05))
    emulator.add_fault(Fault.malformed(1, on="poll", platform=platform.emulated))
    async with make_client(platform.provider(emulator)) as client:
        ex = await client.trigger(platform.workflow)
        with pytest.raises(wt.ProtocolError):
            await client.wait(ex)
        assert (await client.wait(ex)).ok


async def test_an_empty_200_instead_of_a_status_is_a_protocol_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("empty", on="poll")
        with pytest.raises(wt.ProtocolError):
            await client.wait(ex)
        assert client.requests_sent == 2


#: a status answer's wrapper holding something other than an object, per platform
WRAPPERS = {
    "codika": {"execution": "success"},
    "runs_api": {"success": True, "data": "completed"},
    "awaitstep": ["complete"],
    "pinkfish": ["COMPLETE"],
}


@pytest.mark.parametrize(
    "document",
    [[], [{"status": "success"}], "success", 42, None, "wrapper"],
    ids=["empty-list", "list", "string", "number", "null", "wrapper"],
)
async def test_a_status_of_the_wrong_json_shape_is_a_protocol_error(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    document: object,
) -> None:
    if document == "wrapper":
        document = WRAPPERS[platform.kind]
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("json", on="poll", document=document)
        with pytest.raises(wt.ProtocolError):
            await client.wait(ex)
        assert client.requests_sent == 2


async def test_a_results_document_of_the_wrong_shape_is_a_protocol_error(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0))
    for document in ({"results": "none"}, [], {"id": "1"}):
        proxy.add("json", on="result", document=document)
    async with make_client(PINKFISH.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(PINKFISH.workflow)
        for _ in range(3):
            with pytest.raises(wt.ProtocolError):
                await client.wait(ex)
        assert (await client.wait(ex)).ok


# -- bodies over the cap ------------------------------------------------------------------


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_status_body_over_the_cap_is_refused_without_reading_on(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    declared: bool,
) -> None:
    cap = 256 * 1024
    provider = platform.provider(emulator, proxy.url)
    async with make_client(provider, max_body=cap) as client:
        ex = await client.trigger(platform.workflow)
        # The proxy sends more than the cap, then never ends the body: a client that
        # read past the cap would hang here instead of raising.
        proxy.add("huge", on="poll", size=64 * cap if declared else cap + 65536, declared=declared)
        with anyio.fail_after(5), pytest.raises(wt.ProtocolError, match="over the cap") as info:
            await client.wait(ex)
        assert client.requests_sent == 2  # not retried
    assert f"{cap:,}" in str(info.value)


async def test_the_default_cap_is_ten_mebibytes(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    ten_mib = 10 * 1024 * 1024
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ex = await client.trigger(platform.workflow)
        proxy.add("huge", on="poll", size=ten_mib + 65536)
        with anyio.fail_after(10), pytest.raises(wt.ProtocolError, match="10,485,760"):
            await client.wait(ex)


# -- the execution forgotten by the platform ----------------------------------------------


async def test_an_unknown_execution_is_not_found_naming_it_after_one_poll(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    forged = platform.execution(emulator, "1234567890123")
    async with make_client(platform.provider(emulator)) as client:
        with anyio.fail_after(5), pytest.raises(wt.NotFoundError) as info:
            await client.wait(forged)
    assert info.value.status_code == 404
    assert forged.execution_id in str(info.value)
    assert emulator.polls(forged.execution_id) == 1


async def test_an_emulator_restarted_mid_poll_gives_not_found_not_an_endless_loop(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=60))
    provider = platform.provider(emulator)
    if platform.kind == "codika":  # past its registering grace a 404 means "unknown"
        provider = wt.Codika(
            emulator.codika_instance_id,
            api_key=emulator.codika_api_key,
            base_url=emulator.base_url,
            registering_grace=0.3,
        )
    # enough retries to ride out the moment no server listens on the port
    retry = wt.RetryPolicy(attempts=20, backoff=0.02, max_backoff=0.05)
    errors: list[BaseException] = []
    restarted = Emulator(seed=2, port=emulator.port, **KEYS)
    async with make_client(provider, retry=retry) as client:
        ex = await client.trigger(platform.workflow)

        async def wait() -> None:
            try:
                await client.wait(ex, timeout=5)
            except wt.WorkflowTriggerError as exc:
                errors.append(exc)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                with anyio.fail_after(5):
                    await emulator.wait_for_polls(ex.execution_id, 1)
                await emulator.close()
                await restarted.start()
                started = anyio.current_time()
            ended = anyio.current_time() - started
        finally:
            await restarted.close()
    assert len(errors) == 1 and isinstance(errors[0], wt.NotFoundError), errors
    assert ex.execution_id in str(errors[0])
    polls = restarted.polls(ex.execution_id)
    if platform.kind == "codika":  # 404s inside the grace are "still registering"
        assert 1 <= polls <= 30 and ended < 2.0
    else:
        assert polls == 1 and ended < 1.0


async def test_a_download_reset_mid_body_is_retried_and_complete(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 512
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0, files={"out.bin": data}))
    async with make_client(PINKFISH.provider(emulator)) as client:
        outcome = await client.run(PINKFISH.workflow)
    [artifact] = outcome.artifacts
    # the file, fetched through the proxy: cut twice, then whole
    through = attrs.evolve(artifact, url=artifact.url.replace(emulator.base_url, proxy.url))
    async with make_client(PINKFISH.provider(emulator)) as client:
        proxy.add("cut", on="poll", count=1)
        assert await client.download(through) == data
        proxy.add("cut", on="poll", count=1)
        path = await client.download(through, to=tmp_path / "out.bin")
    assert path.read_bytes() == data
    assert emulator.operation_requests("download") == 4  # each cut answer, then its retry


async def test_a_br_compressed_download_over_many_pieces_comes_out_whole(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, tmp_path: Path
) -> None:
    data = random.Random(0).randbytes(256 * 1024) * 4  # 1 MiB: many 64 KiB pieces
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0, files={"out.bin": data}))
    async with make_client(PINKFISH.provider(emulator)) as client:
        outcome = await client.run(PINKFISH.workflow)
    [artifact] = outcome.artifacts
    through = attrs.evolve(artifact, url=artifact.url.replace(emulator.base_url, proxy.url))
    proxy.add("br", count=2)
    async with make_client(PINKFISH.provider(emulator)) as client:
        assert await client.download(through) == data
        path = await client.download(through, to=tmp_path / "out.bin")
    assert path.read_bytes() == data
    assert [seen.action for seen in proxy.seen] == ["br", "br"]


# -- what the platform says is data, not an exception -------------------------------------


@attrs.frozen
class Summary:
    words: int


async def test_a_result_that_does_not_fit_names_the_field_and_the_raw_result_stays(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result={"words": "many"}))
    async with make_client(platform.provider(emulator)) as client:
        ex = await client.trigger(platform.workflow)
        with pytest.raises(wt.ResultTypeError, match="words") as info:
            await client.wait(ex, result_type=Summary)
        raw = await client.wait(ex)  # ended: the raw JSON is one wait away
    assert info.value.fields and "words" in info.value.fields[0]
    assert raw.ok and raw.result is not None
    assert emulator.triggers(platform.workflow) == 1


#: how each platform reports a run that failed or ran out of its own time
ENDINGS = {
    "codika": {"failed": wt.Status.FAILED, "timeout": wt.Status.FAILED},
    "runs_api": {"failed": wt.Status.FAILED, "timeout": wt.Status.FAILED},
    "awaitstep": {"failed": wt.Status.FAILED, "timeout": wt.Status.FAILED},
    "pinkfish": {"failed": wt.Status.FAILED, "timeout": wt.Status.TIMED_OUT},
}


@pytest.mark.parametrize("ending", ["failed", "timeout"])
async def test_a_run_that_fails_remotely_is_an_outcome_not_an_exception(
    platform: Platform, emulator: Emulator, make_client: MakeClient, ending: str
) -> None:
    emulator.scenario(
        platform.workflow, Scenario(duration=0.02, status=ending, error={"message": "boom"})
    )
    async with make_client(platform.provider(emulator)) as client:
        outcome = await client.run(platform.workflow)
    assert outcome.status is ENDINGS[platform.kind][ending] and not outcome.ok
    assert outcome.error is not None and outcome.error.message
    with pytest.raises(wt.WorkflowFailed) as info:
        outcome.unwrap()
    assert info.value.outcome is outcome
