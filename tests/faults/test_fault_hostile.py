"""A hostile or broken server cannot crash, bloat or fool the client (issue 11).

Each answer below comes from a loopback server: the emulator, the ``FaultProxy``
in front of it (answers it forges or alters) or a ``RawServer`` (bytes no
aiohttp.web response can carry). Every one ends in a documented error from
``workflow_trigger.errors`` raised where the answer is read, with a short
message, bounded memory and no secret in any text the SDK keeps.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import brotli
import pytest
from _platforms import FAST, FAST_RETRY, PINKFISH, PLATFORMS, VARIANTS, Platform, send_trigger
from _servers import FaultProxy, RawServer

import workflow_trigger as wt
from workflow_trigger.providers.base import MAX_ID_LENGTH
from workflow_trigger.testing import Emulator, Fault, Scenario

MakeClient = Callable[..., wt.AsyncClient]
MiB = 1024 * 1024
POLLING_VARIANTS = [v for v in VARIANTS if v.polls]


def _doc(document: Any) -> bytes:
    return json.dumps(document).encode()  # ensure_ascii: "\ud800" stays an escape


def trigger_answer(p: Platform, run_id: str) -> tuple[bytes, dict[str, str]]:
    """A trigger answer of ``p`` naming ``run_id`` (Pinkfish: headers, empty body)."""
    if p.kind == "codika":
        return _doc({"success": True, "executionId": run_id}), {}
    if p.kind == "runs_api":
        return _doc({"success": True, "data": {"runId": run_id, "status": "pending"}}), {}
    if p.kind == "awaitstep":
        return _doc({"instanceId": run_id}), {}
    return b"", {"X-Pf-Run-Id": run_id, "X-Pf-Automation-Id": "auto_1"}


def ended_answer(p: Platform, run_id: str, result: Any) -> dict[str, Any]:
    """A status answer of ``p`` saying ``run_id`` succeeded with ``result``
    (Pinkfish: its results document, fetched once the status says COMPLETE)."""
    if p.kind == "codika":
        return {"execution": {"executionId": run_id, "status": "success", "resultData": result}}
    if p.kind == "runs_api":
        return {"success": True, "data": {"id": run_id, "status": "completed", "output": result}}
    if p.kind == "awaitstep":
        return {"id": run_id, "status": "complete", "output": result}
    return {"id": run_id, "status": "COMPLETE", "results": [{"result": result}]}


def deep(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


# -- 1. every byte counts against max_body, decompressed bytes included ------------------


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """128 MiB of spaces (valid JSON whitespace), compressed: about 130 KB each."""
    data = b" " * (128 * MiB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    gzip_bomb = deflater.compress(data) + deflater.flush()
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return {
        "gzip": gzip_bomb,
        "deflate": zlib.compress(data, 9),
        "raw-deflate": raw.compress(data) + raw.flush(),
        "br": brotli.compress(data, quality=5),  # 203 bytes
    }


async def _peak_while(call: Any) -> tuple[BaseException, int]:
    tracemalloc.start()
    try:
        with pytest.raises(wt.WorkflowTriggerError) as info:
            await call
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_compression_bomb_ends_in_a_protocol_error_within_the_cap(
    any_platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    bombs: dict[str, bytes],
) -> None:
    bomb = bombs["gzip"]
    assert len(bomb) < 200_000
    proxy.add("raw", on="trigger", body=bomb, headers={"Content-Encoding": "gzip"})
    emulator.scenario(any_platform.workflow, Scenario(duration=0.0, result={"n": 1}))
    async with make_client(any_platform.provider(emulator, proxy.url), max_body=MiB) as client:
        error, peak = await _peak_while(send_trigger(client, any_platform, any_platform.workflow))
        # while a gzip answer within the cap is decoded and used, every request of a run
        proxy.add("gzip", count=100)
        outcome = await client.run(any_platform.workflow)
    assert outcome.ok, outcome
    assert sum(seen.action == "gzip" for seen in proxy.seen) >= (2 if any_platform.polls else 1)
    assert isinstance(error, wt.ProtocolError)
    assert "once decompressed" in str(error) and "max_body" in str(error)
    assert peak < 6 * MiB, f"{peak:,} bytes at the peak"


@pytest.mark.parametrize("encoding", ["deflate", "raw-deflate", "br"])
@pytest.mark.parametrize("own_session", [False, True], ids=["own", "session-auto-decompress"])
async def test_a_bomb_is_bounded_for_every_encoding_and_a_callers_session(
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    bombs: dict[str, bytes],
    encoding: str,
    own_session: bool,
) -> None:
    wire = "deflate" if "deflate" in encoding else encoding
    proxy.add("raw", on="poll", body=bombs[encoding], headers={"Content-Encoding": wire})
    p = PLATFORMS[0]
    async with aiohttp.ClientSession(auto_decompress=True) as session:
        options: dict[str, Any] = {"session": session} if own_session else {}
        provider = p.provider(emulator, proxy.url)
        async with make_client(provider, max_body=MiB, **options) as client:
            execution = await client.trigger(p.workflow)
            error, peak = await _peak_while(client.status(execution))
    assert isinstance(error, wt.ProtocolError) and "once decompressed" in str(error)
    assert peak < 6 * MiB, f"{peak:,} bytes at the peak"


async def test_a_body_in_an_encoding_not_asked_for_is_a_protocol_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("raw", on="poll", body=b"(\xb5/\xfd\x00X{}", headers={"Content-Encoding": "zstd"})
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(platform.workflow)
        with pytest.raises(wt.ProtocolError, match="cannot be decoded") as info:
            await client.status(execution)
    assert "'zstd'" in str(info.value) and "Accept-Encoding: gzip, deflate, br" in str(info.value)
    assert all("zstd" not in seen.headers["Accept-Encoding"] for seen in proxy.seen)


async def test_br_answers_are_asked_for_and_decoded(
    any_platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    """With brotli >= 1.2 installed (the test extra has it), every request asks for br,
    and a run whose every answer is br-compressed ends as it would without."""
    emulator.scenario(any_platform.workflow, Scenario(duration=0.0, result={"n": 1}))
    proxy.add("br", count=100)
    async with make_client(any_platform.provider(emulator, proxy.url)) as client:
        outcome = await client.run(any_platform.workflow)
    assert outcome.ok and outcome.result is not None, outcome
    assert sum(seen.action == "br" for seen in proxy.seen) >= (2 if any_platform.polls else 1)
    assert all("br" in seen.headers["Accept-Encoding"].split(", ") for seen in proxy.seen)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (brotli.compress(b'{"status": "running"}' * 50)[:-3], "ends early"),
        (b"\xff\x00 not brotli at all \x00" * 4, "is corrupt"),
    ],
    ids=["truncated", "corrupt"],
)
async def test_a_br_body_cut_short_or_corrupt_is_a_protocol_error(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient, body: bytes, said: str
) -> None:
    p = PLATFORMS[0]
    proxy.add("raw", on="poll", body=body, headers={"Content-Encoding": "br"})
    async with make_client(p.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(p.workflow)
        with pytest.raises(wt.ProtocolError, match="cannot be read") as info:
            await client.status(execution)
    assert f"its br data {said}" in str(info.value)


# -- 2. every parse ends in one of our errors --------------------------------------------


async def test_json_nested_100000_deep_in_a_trigger_answer_is_a_protocol_error(
    any_platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("raw", on="trigger", body=deep())
    provider = any_platform.provider(emulator, proxy.url)
    if any_platform.kind == "pinkfish":  # an async trigger answers in headers: sync reads a body
        provider = wt.Pinkfish(emulator.pinkfish_api_key, base_url=proxy.url, wait="sync")
    async with make_client(provider) as client:
        with pytest.raises(wt.ProtocolError, match="nested too deep") as info:
            await send_trigger(client, any_platform, any_platform.workflow)
    assert len(str(info.value)) < 400


async def test_json_nested_100000_deep_in_a_status_answer_is_a_protocol_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("raw", on="poll", body=deep())
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(platform.workflow)
        with pytest.raises(wt.ProtocolError, match="nested too deep"):
            await client.wait(execution)


async def test_json_nested_deep_in_a_results_answer_or_an_embedded_output_is_a_protocol_error(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0, result={"n": 1}))
    proxy.add("raw", on="result", body=deep())
    async with make_client(PINKFISH.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ProtocolError, match="nested too deep"):
            await client.run(PINKFISH.workflow)
    # AwaitStep sends its output as a JSON string inside the record
    awaitstep = PLATFORMS[2]
    record = {"id": "run_1", "status": "complete", "output": deep(50_000).decode()}
    proxy.add("raw", on="poll", body=_doc(record))
    async with make_client(awaitstep.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ProtocolError, match="nested too deep"):
            await client.status(awaitstep.execution(emulator, "run_1"))


@pytest.mark.parametrize("fault", ["deep", "surrogate"])
async def test_one_hostile_answer_in_a_run_many_of_20_costs_one_outcome_not_20(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    fault: str,
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result={"n": 1}))
    if fault == "deep":
        proxy.add("raw", on="poll", body=deep())
    else:
        body, headers = trigger_answer(platform, "run_\ud800")
        if platform.kind == "pinkfish":  # a header cannot carry it: an id too long instead
            body, headers = trigger_answer(platform, "r" * (MAX_ID_LENGTH + 1))
        proxy.add("raw", on="trigger", body=body, headers=headers)
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        outcomes = [
            o async for o in client.run_many(platform.workflow, [{"i": i} for i in range(20)])
        ]
    assert len(outcomes) == 20
    failed = [o for o in outcomes if o.exception is not None]
    assert len(failed) == 1 and isinstance(failed[0].exception, wt.ProtocolError)
    assert sum(o.ok for o in outcomes) == 19


BAD_IDS = {
    "lone-surrogate": "run_\ud800",
    "control-character": "run\n1",
    "delete": "run\x7f1",
    "too-long": "r" * (MAX_ID_LENGTH + 1),
}


# a header cannot carry most of these: Pinkfish's are in the raw-socket test of X-Pf-Run-Id
_ID_CASES = [
    (p, bad) for p in PLATFORMS for bad in BAD_IDS if p.kind != "pinkfish" or bad == "too-long"
]


@pytest.mark.parametrize(
    ("platform", "bad"), _ID_CASES, ids=[f"{p.name}-{bad}" for p, bad in _ID_CASES]
)
async def test_an_id_that_cannot_go_in_a_url_is_refused_where_the_trigger_answer_is_read(
    platform: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    bad: str,
) -> None:
    run_id = BAD_IDS[bad]
    body, headers = trigger_answer(platform, run_id)
    proxy.add("raw", on="trigger", body=body, headers=headers)
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.ProtocolError) as info:
            await client.trigger(platform.workflow)
    assert len(str(info.value)) < 400
    assert "id" in str(info.value)


@pytest.mark.parametrize("value", [b"run-\xff\xfe", b"run-\xed\xa0\x80", b"run-\x01"])
async def test_invalid_utf8_or_control_bytes_in_x_pf_run_id_is_a_protocol_error(
    emulator: Emulator, make_client: MakeClient, value: bytes
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n"
        b"X-Pf-Run-Id: " + value + b"\r\nX-Pf-Automation-Id: auto_1\r\n\r\n"
    )
    async with (
        RawServer(answer) as server,
        make_client(PINKFISH.provider(emulator, server.url)) as client,
    ):
        with pytest.raises(wt.ProtocolError, match="X-Pf-Run-Id"):
            await client.trigger(PINKFISH.workflow)


async def test_invalid_utf8_or_a_lone_surrogate_in_a_body_is_a_protocol_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("raw", on="poll", body=b'{"status": "\xff\xfe"}')
    run_id = "run_ok"
    ended = ended_answer(platform, run_id, {"text": "caf\ud800"})
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        execution = platform.execution(emulator, run_id)
        with pytest.raises(wt.ProtocolError, match="UTF-8"):
            await client.status(execution)
        operation = "result" if platform.fetches_results else "poll"
        if platform.fetches_results:
            proxy.add("json", on="poll", document={"runId": run_id, "status": "COMPLETE"})
        proxy.add("raw", on=operation, body=_doc(ended))
        with pytest.raises(wt.ProtocolError, match="not valid Unicode"):
            await client.wait(execution)


async def test_a_10_mb_id_is_refused_before_sending_with_a_short_message(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    huge = "x" * 10_000_000
    async with make_client(platform.provider(emulator)) as client:
        with pytest.raises(wt.InvalidInputError) as info:
            await client.trigger(huge)
        assert len(str(info.value)) < 400
        with pytest.raises(wt.InvalidInputError) as info:
            await client.status(platform.execution(emulator, huge))
        assert len(str(info.value)) < 400
        assert client.requests_sent == 0


async def test_a_414_echoing_10_mb_makes_a_short_message(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    any_platform = platform  # the AwaitStep function already quoted 200 characters at most
    huge = "x" * 3_000_000  # three times over: 9 MB, within max_body
    body = _doc({"success": False, "error": huge, "message": huge, "code": huge})
    proxy.add("raw", on="trigger", status=414, body=body)
    async with make_client(any_platform.provider(emulator, proxy.url)) as client:
        with pytest.raises(wt.APIError) as info:
            await client.trigger(any_platform.workflow)
    assert len(str(info.value)) < 1000
    assert info.value.code is None or len(info.value.code) < 200


# -- 3. the answer must be about the execution asked for ---------------------------------


async def test_a_status_answer_about_another_execution_is_a_protocol_error(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result={"mine": False}))
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        ours = await client.trigger(platform.workflow)
        other = await client.trigger(platform.workflow)
        proxy.add("reroute", on="poll", old=ours.execution_id, new=other.execution_id)
        with pytest.raises(wt.ProtocolError, match="names execution") as info:
            await client.wait(ours)
    assert other.execution_id in str(info.value) and ours.execution_id in str(info.value)


async def test_a_results_answer_about_another_run_is_a_protocol_error(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(PINKFISH.workflow, Scenario(duration=0.0, result={"mine": False}))
    async with make_client(PINKFISH.provider(emulator, proxy.url)) as client:
        ours = await client.trigger(PINKFISH.workflow)
        other = await client.trigger(PINKFISH.workflow)
        proxy.add("reroute", on="result", old=ours.execution_id, new=other.execution_id)
        with pytest.raises(wt.ProtocolError, match="names execution"):
            await client.wait(ours)


# -- 4. server hints are bounded ---------------------------------------------------------


async def test_a_429_asking_for_31_years_on_a_trigger_fails_at_once(
    any_platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.add_fault(
        Fault.rate_limited(1, retry_after=1e9, on="trigger", platform=any_platform.emulated)
    )
    async with make_client(any_platform.provider(emulator)) as client:
        with anyio.fail_after(5), pytest.raises(wt.RateLimitError) as info:
            await send_trigger(client, any_platform, any_platform.workflow)
        assert client.requests_sent == 1
    assert info.value.retry_after == 1e9
    assert "max_retry_after" in str(info.value)


async def test_a_429_asking_for_31_years_on_a_status_fails_at_once(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    async with make_client(platform.provider(emulator)) as client:
        execution = await client.trigger(platform.workflow)
        emulator.add_fault(
            Fault.rate_limited(1, retry_after=1e9, on="poll", platform=platform.emulated)
        )
        with anyio.fail_after(5), pytest.raises(wt.RateLimitError) as info:
            await client.status(execution)
        assert client.requests_sent == 2
    assert info.value.retry_after == 1e9


async def test_a_503_asking_for_years_is_not_waited_for(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    proxy.add("raw", on="poll", status=503, body=b"{}", headers={"Retry-After": "999999999"})
    async with make_client(platform.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(platform.workflow)
        with anyio.fail_after(5), pytest.raises(wt.ServerError, match="max_retry_after"):
            await client.status(execution)


async def test_a_spent_runs_api_window_resetting_in_years_fails_the_next_request_at_once(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    runs = PLATFORMS[1]
    hint = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "999999999"}
    proxy.add("headers", on="poll", headers=hint)
    emulator.scenario(runs.workflow, Scenario(duration=60.0))
    async with make_client(runs.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(runs.workflow)
        snapshot = await client.status(execution)
        assert snapshot.retry_after is not None and snapshot.retry_after <= 120.0
        with anyio.fail_after(5), pytest.raises(wt.RateLimitError) as info:
            await client.status(execution)
        assert client.requests_sent == 2
    assert info.value.retry_after is not None and info.value.retry_after > 10**8


async def test_a_poll_hint_of_years_is_cut_to_max_retry_after(
    platform: Platform, emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result={"n": 1}))
    proxy.add("headers", on="poll", headers={"Retry-After": "1000000000"})
    retry = wt.RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, max_retry_after=0.05)
    async with make_client(platform.provider(emulator, proxy.url), retry=retry) as client:
        execution = await client.trigger(platform.workflow)
        first = await client.status(execution)
        with anyio.fail_after(5):
            outcome = await client.wait(execution)
    assert first.status.is_terminal or first.retry_after == 0.05
    assert outcome.ok


# -- 5. no secret survives a server that echoes it ---------------------------------------


def _escaped(text: str) -> str:
    """``text`` spelt in JSON \\u escapes, as a server may send it."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _echo(secrets: tuple[str, ...]) -> str:
    said = " ".join(f"key={s}" for s in secrets)
    return f"refused GET /x?api_key={secrets[0]}&a=1 with {said}; ESCAPED"


def _files_in(folder: Path) -> list[str]:
    """Every file of ``folder`` (the journal and its WAL) as text."""
    return [path.read_bytes().decode("utf-8", "replace") for path in folder.iterdir()]


def _failed_answer(p: Platform, run_id: str, echo: str) -> dict[str, Any]:
    detail = {"message": echo, "code": "E", "echo": echo, echo: "as a key"}
    if p.kind == "codika":
        return {"execution": {"executionId": run_id, "status": "failed", "errorDetails": detail}}
    if p.kind == "runs_api":
        steps = [{"id": "s1", "name": echo, "status": "failed"}]
        data = {"id": run_id, "status": "failed", "error": detail, "steps": steps}
        return {"success": True, "data": data}
    if p.kind == "awaitstep":
        return {"id": run_id, "status": "errored", "error": json.dumps(detail)}
    info = {"1": {"name": echo, "status": "FAILED", "executionOrder": 1}}
    return {"runId": run_id, "status": "FAILED", "message": echo, "stepInfo": info}


@pytest.mark.parametrize("variant", POLLING_VARIANTS, ids=[v.name for v in POLLING_VARIANTS])
async def test_a_server_echoing_secrets_leaves_none_in_outcome_log_event_or_journal(
    variant: Platform,
    emulator: Emulator,
    proxy: FaultProxy,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = variant.secrets(emulator)
    echo = _echo(secrets)
    events: list[wt.Event] = []
    provider = variant.provider(emulator, proxy.url)
    journal = tmp_path / "batch.sqlite"
    async with make_client(provider, on_event=events.append) as client:
        execution = await client.trigger(variant.workflow)
        run_id = execution.execution_id
        # a status word the SDK does not know (logged once), then a failure echoing all
        unknown = _failed_answer(variant, run_id, echo)
        text = json.dumps(unknown).replace('"failed"', json.dumps(f"odd {secrets[0]}"))
        text = text.replace('"errored"', json.dumps(f"odd {secrets[0]}"))
        text = text.replace('"FAILED"', json.dumps(f"odd {secrets[0]}"), 1)
        proxy.add("raw", on="poll", body=text.encode())
        failed = json.dumps(_failed_answer(variant, run_id, echo))
        proxy.add("raw", on="poll", body=failed.replace("ESCAPED", _escaped(secrets[0])).encode())
        snapshots: list[wt.Snapshot] = []
        outcomes = [await client.wait(execution, on_snapshot=snapshots.append)]
        # and a journal of a run whose every answer echoes: its outcome is recorded
        emulator.scenario(
            variant.workflow, Scenario(duration=0.0, status="failed", error={"message": echo})
        )
        many = client.run_many(variant.workflow, [1], journal=journal)
        outcomes += [o async for o in many]
    shown: list[str] = [repr(o) for o in outcomes] + [repr(e) for e in events]
    shown += [repr(snapshot) for snapshot in snapshots]
    for outcome in outcomes:
        shown += [str(outcome.error), repr(outcome.error and outcome.error.details)]
        shown += [repr(outcome.raw_status), repr(outcome.exception)]
    shown += [record.getMessage() for record in caplog.records]
    shown += _files_in(tmp_path)
    assert outcomes[0].status is wt.Status.FAILED, outcomes[0]
    assert outcomes[0].error is not None and "***" in outcomes[0].error.message
    leaks = [(s, text) for s in secrets for text in shown if s in text]
    assert not leaks, leaks[:1]
    assert sqlite3.connect(journal).execute("select count(*) from sqlite_master").fetchone()


async def test_a_pinkfish_results_document_echoing_the_key_in_file_names_is_masked(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    secrets = PINKFISH.secrets(emulator)
    echo = _echo(secrets)
    async with make_client(PINKFISH.provider(emulator, proxy.url)) as client:
        execution = await client.trigger(PINKFISH.workflow)
        run_id = execution.execution_id
        proxy.add("json", on="poll", document={"runId": run_id, "status": "COMPLETE"})
        files = {echo: {"url": f"https://files.example/{secrets[0]}.csv", "mimeType": "t"}}
        results = {"id": run_id, "results": [{"resultUrls": files, "note": echo}]}
        proxy.add("json", on="result", document=results)
        outcome = await client.wait(execution)
    assert outcome.ok
    shown = repr(outcome) + repr(outcome.raw_result) + repr(outcome.artifacts)
    shown += "".join(a.name + a.url for a in outcome.artifacts)
    assert not [s for s in secrets if s in shown]
    assert outcome.artifacts and "***" in outcome.artifacts[0].name


async def test_an_awaitstep_function_echoing_its_headers_in_a_text_answer_is_masked(
    emulator: Emulator, proxy: FaultProxy, make_client: MakeClient
) -> None:
    from _platforms import FUNCTION

    secrets = FUNCTION.secrets(emulator)
    proxy.add("raw", on="trigger", body=_echo(secrets).encode(), headers={"Content-Type": "t"})
    async with make_client(FUNCTION.provider(emulator, proxy.url)) as client:
        outcome = await client.run(FUNCTION.workflow)
    assert outcome.ok and isinstance(outcome.result, str)
    assert not [s for s in secrets if s in outcome.result]


# -- 6. options are checked before anything is sent --------------------------------------


@pytest.mark.parametrize("method", ["run", "wait", "run_many", "wait_many"])
async def test_a_result_type_cattrs_cannot_structure_is_refused_before_any_request(
    platform: Platform, emulator: Emulator, make_client: MakeClient, method: str
) -> None:
    async with make_client(platform.provider(emulator)) as client:
        execution = platform.execution(emulator, "run_1")
        with pytest.raises(wt.InvalidInputError, match="result_type") as info:
            if method == "run":
                await client.run(platform.workflow, result_type="Point")  # type: ignore[call-overload]
            elif method == "wait":
                await client.wait(execution, result_type="Point")  # type: ignore[call-overload]
            elif method == "run_many":
                client.run_many(platform.workflow, [1], result_type="Point")  # type: ignore[arg-type]
            else:
                client.wait_many([execution], result_type="Point")  # type: ignore[arg-type]
        assert client.requests_sent == 0
    assert "pass the class itself" in str(info.value)
    assert emulator.requests == 0


def test_every_provider_says_which_controls_it_supports(emulator: Emulator) -> None:
    from _platforms import FUNCTION

    for p in (*PLATFORMS, FUNCTION):
        provider = p.provider(emulator)
        expected = {"awaitstep": {"cancel", "pause", "resume", "event"}}.get(p.kind, set())
        assert provider.controls == frozenset(expected), p.name
        for control in ("cancel", "pause", "resume", "event"):
            if control in expected:
                continue
            with pytest.raises(wt.UnsupportedOperation):
                provider.control_request(
                    p.execution(emulator, "run_1"), control, {"event_type": "x"}
                )


# -- 7. result_type structures strictly ---------------------------------------------------


@pytest.mark.parametrize(
    ("result_type", "result"),
    [(str, {"count": "abc"}), (bool, {"count": "abc"}), (int, "1"), (float, "1.5")],
    ids=["str-of-dict", "bool-of-dict", "int-of-str", "float-of-str"],
)
# a Pinkfish result is its results document, always an object
@pytest.mark.parametrize(
    "platform",
    [p for p in PLATFORMS if p.kind != "pinkfish"],
    ids=[p.name for p in PLATFORMS if p.kind != "pinkfish"],
)
async def test_result_type_never_converts_one_json_type_into_another(
    platform: Platform,
    emulator: Emulator,
    make_client: MakeClient,
    result_type: type,
    result: Any,
) -> None:
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result=result))
    async with make_client(platform.provider(emulator)) as client:
        with pytest.raises(wt.ResultTypeError, match="expected") as info:
            await client.run(platform.workflow, result_type=result_type)
    assert info.value.fields


def test_poll_and_retry_fixtures_still_build() -> None:
    assert FAST.interval <= FAST.max_interval and FAST_RETRY.max_retry_after == 120.0


async def test_a_field_can_be_made_lax_with_a_hook_on_your_own_converter(
    platform: Platform, emulator: Emulator, make_client: MakeClient
) -> None:
    import attrs
    import cattrs
    from cattrs.gen import make_dict_structure_fn, override

    @attrs.frozen
    class Order:
        id: str
        count: int

    result = {"id": "o-1", "count": "3"}
    emulator.scenario(platform.workflow, Scenario(duration=0.0, result=result))
    lax = cattrs.Converter()
    lax_count = override(struct_hook=lambda value, _: int(value))
    lax.register_structure_hook(Order, make_dict_structure_fn(Order, lax, count=lax_count))
    target: Any = Order
    if platform.kind == "pinkfish":  # the result is the results document: its last step
        target = dict
    async with make_client(platform.provider(emulator), converter=lax) as client:
        outcome = await client.run(platform.workflow, result_type=target)
    if platform.kind != "pinkfish":
        assert outcome.result == Order(id="o-1", count=3)
    async with make_client(platform.provider(emulator)) as client:
        with pytest.raises(wt.ResultTypeError) as info:
            await client.run(platform.workflow, result_type=Order)
    assert any(".count" in field or "count" in field for field in info.value.fields)
