"""The emulator's Pinkfish routes against 004_93476439575e033a.txt and the platform notes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest

from workflow_trigger.testing import Emulator, Fault, Scenario

if TYPE_CHECKING:
    from conftest import HTTP, Answer

AUTOMATION_ID = re.compile(r"^[0-9a-v]{20}$")
STARTED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def trigger(
    http: HTTP,
    trigger_id: str = "trg_hello",
    payload: Any = None,
    *,
    wait: str | None = "false",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Answer:
    sent = {"X-API-KEY": http.emu.pinkfish_api_key} if headers is None else dict(headers)
    if wait is not None:
        sent["x-api-wait"] = wait
    if data is not None:
        return await http.post(f"/ext/triggers/{trigger_id}", data=data, headers=sent)
    body = {"user_request": "process this data"} if payload is None else payload
    return await http.post(f"/ext/triggers/{trigger_id}", body, headers=sent)


async def start(http: HTTP, trigger_id: str = "trg_hello") -> tuple[str, str]:
    answer = await trigger(http, trigger_id)
    assert answer.status == 200, answer.body
    return answer.headers["X-Pf-Automation-Id"], answer.headers["X-Pf-Run-Id"]


def runs_path(http: HTTP, automation: str, run_id: str, what: str, key: str | None = None) -> str:
    return f"/ext/webhook/{key or http.emu.pinkfish_api_key}/runs/{automation}/{run_id}/{what}"


async def status_of(http: HTTP, automation: str, run_id: str) -> dict[str, Any]:
    answer = await http.get(runs_path(http, automation, run_id, "status"))
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json
    return found


async def results_of(http: HTTP, automation: str, run_id: str) -> dict[str, Any]:
    answer = await http.get(runs_path(http, automation, run_id, "results"))
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json
    return found


# -- async trigger, status, results ------------------------------------------------


@pytest.mark.parametrize("wait", ["false", None, "FALSE"])
async def test_async_trigger_answers_ids_in_headers(
    emulator: Emulator, http: HTTP, wait: str | None
) -> None:
    answer = await trigger(http, wait=wait)
    assert answer.status == 200
    assert answer.body == b""
    assert answer.headers["X-Pf-Run-Id"].isdigit() and len(answer.headers["X-Pf-Run-Id"]) >= 19
    automation = answer.headers["X-Pf-Automation-Id"]
    assert AUTOMATION_ID.match(automation)
    assert automation == emulator.pinkfish_automation_id("trg_hello")
    assert emulator.executions[0].payload == {"user_request": "process this data"}
    assert emulator.executions[0].id == answer.headers["X-Pf-Run-Id"]


async def test_run_ids_are_unique_and_automation_ids_configurable(
    make_http: Callable[..., Awaitable[HTTP]],
) -> None:
    http = await make_http(pinkfish_automation_ids={"trg_hello": "d831ue4rccbc73knbi80"})
    ids = [await start(http) for _ in range(5)]
    assert {automation for automation, _ in ids} == {"d831ue4rccbc73knbi80"}
    assert len({run_id for _, run_id in ids}) == 5


async def test_status_of_a_complete_run(emulator: Emulator, http: HTTP) -> None:
    automation, run_id = await start(http)
    assert await status_of(http, automation, run_id) == {
        "automationId": automation,
        "runId": run_id,
        "status": "COMPLETE",
        "stepStatus": {"1": "COMPLETE"},
        "stepInfo": {"1": {"status": "COMPLETE", "name": "Step 1", "executionOrder": 1}},
    }


async def test_steps_progress(emulator: Emulator, http: HTTP) -> None:
    steps = ("Fetch", "Summarise", "Send")
    emulator.scenario("trg_hello", Scenario(duration=30, queued=3, steps=steps))
    automation, run_id = await start(http)
    execution = emulator.executions[0]
    seen = []
    for advance in (0, 5, 6, 10, 9):  # run time 0, 5, 11, 21, 30
        execution.advance(advance)
        body = await status_of(http, automation, run_id)
        seen.append((body["status"], list(body["stepStatus"].values())))
        assert [info["name"] for info in body["stepInfo"].values()] == list(steps)
        assert [info["executionOrder"] for info in body["stepInfo"].values()] == [1, 2, 3]
        assert [info["status"] for info in body["stepInfo"].values()] == seen[-1][1]
    assert seen == [
        ("PENDING", ["PENDING", "PENDING", "PENDING"]),
        ("RUNNING", ["RUNNING", "PENDING", "PENDING"]),
        ("RUNNING", ["COMPLETE", "RUNNING", "PENDING"]),
        ("RUNNING", ["COMPLETE", "COMPLETE", "RUNNING"]),
        ("COMPLETE", ["COMPLETE", "COMPLETE", "COMPLETE"]),
    ]


@pytest.mark.parametrize(("outcome", "status"), [("failed", "FAILED"), ("timeout", "TIMEOUT")])
async def test_failed_and_timed_out_runs(
    emulator: Emulator, http: HTTP, outcome: str, status: str
) -> None:
    emulator.scenario("trg_hello", Scenario(status=outcome, steps=("a", "b")))
    automation, run_id = await start(http)
    body = await status_of(http, automation, run_id)
    assert body["status"] == status
    assert body["stepStatus"] == {"1": "COMPLETE", "2": status}
    results = await results_of(http, automation, run_id)
    assert results["status"] == status
    assert [(r["stepIndex"], r["exitCode"]) for r in results["results"]] == [(1, 0), (2, 1)]
    assert "designatedOutput" not in results


async def test_results_with_files_and_designated_output(emulator: Emulator, http: HTTP) -> None:
    files: dict[str, bytes | str] = {
        "output.txt": b"Hello, world!",
        "data.json": '{"a": 1}',
        "raw.bin": b"\x00\x01",
    }
    emulator.scenario(
        "trg_hello",
        Scenario(duration=0.0, files=files, designated="output.txt", result="hi"),
    )
    automation, run_id = await start(http)
    results = await results_of(http, automation, run_id)
    assert list(results) == [
        "automationId",
        "automationVersion",
        "automationName",
        "id",
        "type",
        "results",
        "started",
        "status",
        "designatedOutput",
    ]
    assert (results["automationId"], results["id"]) == (automation, run_id)
    assert (results["automationVersion"], results["automationName"]) == (1, "trg_hello")
    assert (results["type"], results["status"]) == ("TRIGGER", "COMPLETE")
    assert STARTED.match(results["started"])
    [step] = results["results"]
    assert list(step) == ["stepIndex", "stepVersion", "resultUrls", "exitCode", "duration"]
    assert (step["stepIndex"], step["stepVersion"], step["exitCode"]) == (1, 1, 0)
    urls = step["resultUrls"]
    assert {name: (u["mimeType"], u["size"]) for name, u in urls.items()} == {
        "output.txt": ("text/plain", 13),
        "data.json": ("application/json", 8),
        "raw.bin": ("application/octet-stream", 2),
    }
    designated = results["designatedOutput"]
    assert designated == {
        "url": urls["output.txt"]["url"],
        "fileName": "output.txt",
        "mimeType": "text/plain",
        "size": 13,
    }
    expected = {"output.txt": b"Hello, world!", "data.json": b'{"a": 1}', "raw.bin": b"\x00\x01"}
    for name, entry in urls.items():
        assert entry["url"].startswith(emulator.base_url + "/files/")
        download = await http.get(entry["url"])  # no credentials
        assert download.status == 200
        assert download.body == expected[name]
        assert download.headers["Content-Type"] == entry["mimeType"]
        assert download.headers["Content-Length"] == str(entry["size"])
    assert emulator.operation_requests("download") == 3
    assert emulator.operation_requests("result") == 1
    assert emulator.polls(run_id) == 0  # results and downloads are not polls
    missing = await http.get(urls["output.txt"]["url"].replace("output.txt", "nope.txt"))
    assert missing.status == 404
    assert missing.json == {"error": "not_found", "message": "File not found"}


async def test_designated_output_only_when_resolvable(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("unresolved", Scenario(files={"a.txt": "x"}, designated="missing.txt"))
    emulator.scenario("running", Scenario(duration=60, files={"a.txt": "x"}, designated="a.txt"))
    for trigger_id in ("unresolved", "running"):
        automation, run_id = await start(http, trigger_id)
        assert "designatedOutput" not in await results_of(http, automation, run_id)
    running = await results_of(http, *await start(http, "running"))
    assert running["status"] in ("PENDING", "RUNNING") and running["results"] == []


# -- synchronous mode --------------------------------------------------------------


async def test_sync_mode_answers_the_finished_run(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("trg_hello", Scenario(duration=0.05, result={"poem": "roses"}))
    started = time.monotonic()
    answer = await trigger(http, wait="true")
    assert time.monotonic() - started >= 0.05
    assert answer.status == 200
    run = answer.json
    assert run["id"] == answer.headers["X-Pf-Run-Id"]
    assert run["automationId"] == answer.headers["X-Pf-Automation-Id"]
    assert run["status"] == "COMPLETE" and STARTED.match(run["started"])
    assert run["results"] == [
        {
            "stepIndex": 1,
            "result": {"resultType": "json", "result": {"poem": "roses"}},
            "exitCode": 0,
            "duration": 50,
        }
    ]
    assert emulator.in_flight == 0  # the answer showed the end


async def test_sync_mode_times_out(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(pinkfish_sync_limit=0.05)
    http.emu.scenario("trg_hello", Scenario(duration=60, queued=0))
    with anyio.fail_after(5):
        answer = await trigger(http, wait="true")
    assert answer.status == 200
    assert answer.json["status"] == "timeout" and answer.json["message"]
    run_id = answer.headers["X-Pf-Run-Id"]
    automation = answer.headers["X-Pf-Automation-Id"]
    assert (await status_of(http, automation, run_id))["status"] == "RUNNING"
    assert http.emu.in_flight == 1


async def test_sync_mode_failed_run(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("trg_hello", Scenario(status="failed", error={"message": "no quota"}))
    run = (await trigger(http, wait="true")).json
    assert run["status"] == "FAILED"
    assert run["results"][0]["exitCode"] == 1
    assert run["results"][0]["result"] == {"resultType": "error", "result": "no quota"}


# -- webhook variant and refusals ----------------------------------------------------


async def test_webhook_variant_needs_no_header(emulator: Emulator, http: HTTP) -> None:
    path = f"/ext/webhook/{emulator.pinkfish_api_key}/triggers/trg_hello"
    answer = await http.post(path, {"n": 1})
    assert answer.status == 200 and answer.body == b""
    automation, run_id = answer.headers["X-Pf-Automation-Id"], answer.headers["X-Pf-Run-Id"]
    assert (await status_of(http, automation, run_id))["status"] == "COMPLETE"
    held = await http.post(path, {"n": 2}, headers={"x-api-wait": "true"})
    assert held.json["status"] == "COMPLETE"
    wrong = await http.post("/ext/webhook/pf_wrong/triggers/trg_hello", {"n": 1})
    assert (wrong.status, wrong.json) == (
        401,
        {"error": "unauthorized", "message": "Invalid API key"},
    )
    assert emulator.triggers("trg_hello") == 2


async def test_refusals(emulator: Emulator, http: HTTP) -> None:
    missing = await trigger(http, headers={})
    assert missing.status == 401 and missing.json["error"] == "unauthorized"
    wrong = await trigger(http, headers={"X-API-KEY": "pf_wrong"})
    assert wrong.json == {"error": "unauthorized", "message": "Invalid API key"}
    not_json = await trigger(http, data=b"{nope")
    assert (not_json.status, not_json.json) == (
        400,
        {"error": "bad_request", "message": "The request body is not valid JSON"},
    )
    bad_wait = await trigger(http, wait="maybe")
    assert (bad_wait.status, bad_wait.json["error"]) == (400, "bad_request")
    assert emulator.executions == []

    automation, run_id = await start(http)
    bad_key = await http.get(runs_path(http, automation, run_id, "status", key="pf_wrong"))
    assert bad_key.status == 401
    other_automation = await http.get(runs_path(http, "0" * 20, run_id, "status"))
    assert (other_automation.status, other_automation.json["error"]) == (404, "not_found")
    unknown = await http.get(runs_path(http, automation, "123", "results"))
    assert unknown.json == {"error": "not_found", "message": "Run not found"}


async def test_strict_unknown_trigger(make_http: Callable[..., Awaitable[HTTP]]) -> None:
    http = await make_http(strict_workflows=True)
    answer = await trigger(http, "trg_unknown")
    assert (answer.status, answer.json["error"]) == (404, "not_found")


# -- faults and counters -------------------------------------------------------------


async def test_faults_render_pinkfish_errors(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.server_error(on="trigger", platform="pinkfish"))
    emulator.add_fault(Fault.rate_limited(retry_after=2, on="poll", platform="pinkfish"))
    emulator.add_fault(Fault.server_error(status=503, on="result"))
    emulator.add_fault(Fault.drop(count=2, on="download"))
    answer = await trigger(http)
    assert answer.status == 500
    assert answer.json == {"error": "internal_server_error", "message": "Internal Server Error"}
    emulator.scenario("trg_hello", Scenario(files={"f.txt": "x"}))
    automation, run_id = await start(http)
    limited = await http.get(runs_path(http, automation, run_id, "status"))
    assert limited.status == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json == {"error": "rate_limited", "message": "Rate limit exceeded"}
    assert (await http.get(runs_path(http, automation, run_id, "results"))).status == 503
    results = await results_of(http, automation, run_id)
    url = results["results"][0]["resultUrls"]["f.txt"]["url"]
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.get(url)  # aiohttp retries a GET once: both attempts are dropped
    assert [r.fault for r in emulator.request_log[-2:]] == ["drop", "drop"]
    assert (await http.get(url)).body == b"x"
    assert emulator.faults_remaining == 0


async def test_malformed_and_slow(emulator: Emulator, http: HTTP) -> None:
    emulator.add_fault(Fault.malformed(on="trigger", platform="pinkfish"))
    emulator.add_fault(Fault.slow(delay=0.05, on="poll", platform="pinkfish"))
    answer = await trigger(http)
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.body)
    assert "X-Pf-Run-Id" not in answer.headers and emulator.executions == []
    automation, run_id = await start(http)
    started = time.monotonic()
    assert (await status_of(http, automation, run_id))["status"] == "COMPLETE"
    assert time.monotonic() - started >= 0.05


async def test_counters(emulator: Emulator, http: HTTP) -> None:
    emulator.scenario("long", Scenario(duration=60))
    automation, run_id = await start(http)
    long_automation, long_run = await start(http, "long")
    await status_of(http, automation, run_id)
    await status_of(http, long_automation, long_run)
    await status_of(http, long_automation, long_run)
    await results_of(http, automation, run_id)
    assert (emulator.trigger_requests, emulator.poll_requests) == (2, 3)
    assert (emulator.polls(run_id), emulator.polls(long_run)) == (1, 2)
    assert (emulator.triggers("trg_hello"), emulator.triggers("long")) == (1, 1)
    assert (emulator.in_flight, emulator.max_in_flight) == (1, 2)
    assert [r.operation for r in emulator.request_log] == ["trigger"] * 2 + ["poll"] * 3 + [
        "result"
    ]
    assert {r.platform for r in emulator.request_log} == {"pinkfish"}
