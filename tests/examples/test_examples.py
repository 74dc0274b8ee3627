"""The examples, run the way a user runs them, against the emulator.

Every example is configured through the environment alone (``CODIKA_*`` and
``WORKFLOW_POLL_INTERVAL``), pointing at the test's emulator. The FastAPI app
is served by a real uvicorn server on loopback, in the test's event loop, and
called over HTTP; the asyncio service and the batch script run as
subprocesses of ``sys.executable`` (the emulator is served from this process,
so a subprocess needs nothing but its base URL).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from _uvicorn import TrackedApp, serve
from multidict import CIMultiDictProxy

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POLL_INTERVAL = 0.05


def example_env(emulator: Emulator) -> dict[str, str]:
    return {
        "CODIKA_BASE_URL": emulator.base_url,
        "CODIKA_API_KEY": emulator.codika_api_key,
        "CODIKA_PROCESS_INSTANCE_ID": emulator.codika_instance_id,
        "WORKFLOW_POLL_INTERVAL": str(POLL_INTERVAL),
    }


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


fastapi_app = load_example("fastapi_app")


# -- the FastAPI app under uvicorn ---------------------------------------------------------


@attrs.frozen
class Served:
    url: str
    app: TrackedApp
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        async with self.http.request(method, self.url + path, json=body) as response:
            return response.status, await response.json(), response.headers


@pytest.fixture
async def served(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """The example app, started from the environment as in production, on a free port."""
    for name, value in example_env(emulator).items():
        monkeypatch.setenv(name, value)
    app = TrackedApp(fastapi_app.create_app())
    async with serve(app) as url, aiohttp.ClientSession() as http:
        yield Served(url, app, http)


async def test_trigger_then_status_then_result_by_token(served: Served, emulator: Emulator) -> None:
    emulator.scenario("summarise", Scenario(duration=0.3, result=lambda p: {"upper": p["text"]}))
    status, body, headers = await served.call("POST", "/runs/summarise", {"text": "hi"})
    assert status == 202
    token = body["token"]
    execution = wt.Execution.from_token(token)
    assert body == {
        "token": token,
        "workflow_id": "summarise",
        "execution_id": execution.execution_id,
    }
    assert headers["Location"] == f"{served.url}/runs/{token}"
    assert emulator.executions[0].payload == {"text": "hi"}

    status, body, _ = await served.call("GET", f"/runs/{token}")
    assert status == 200
    assert (body["status"], body["raw_status"], body["steps"]) == ("pending", "pending", [])
    assert emulator.polls(execution.execution_id) == 1

    status, body, _ = await served.call("GET", f"/runs/{token}/result")
    assert status == 200
    assert body["status"] == "succeeded" and body["raw_status"] == "success"
    assert body["result"] == {"upper": "hi"} and body["error"] is None
    assert emulator.polls(execution.execution_id) == 1 + body["polls"]

    status, body, _ = await served.call("GET", f"/runs/{token}")
    assert (status, body["status"]) == (200, "succeeded")
    assert emulator.triggers("summarise") == 1


async def test_a_failed_run_is_a_200_with_the_platforms_error(
    served: Served, emulator: Emulator
) -> None:
    emulator.scenario("broken", Scenario(status="failed", error={"message": "boom", "code": "E1"}))
    _, body, _ = await served.call("POST", "/runs/broken")
    status, body, _ = await served.call("GET", f"/runs/{body['token']}/result")
    assert status == 200
    assert body["status"] == "failed" and body["result"] is None
    assert (body["error"]["message"], body["error"]["code"]) == ("boom", "E1")


async def test_our_deadline_passing_is_a_504_with_the_token_to_wait_again(
    served: Served, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    _, body, _ = await served.call("POST", "/runs/slow")
    token = body["token"]
    status, body, _ = await served.call("GET", f"/runs/{token}/result?timeout=0.2")
    assert status == 504
    assert body["error"] == "PollTimeout" and body["token"] == token


async def test_sdk_errors_map_to_http_statuses(served: Served, emulator: Emulator) -> None:
    status, body, _ = await served.call("GET", "/runs/not-a-token")
    assert (status, body["error"]) == (422, "InvalidInputError")

    emulator.strict_workflows = True
    status, body, _ = await served.call("POST", "/runs/no-such-workflow")
    assert (status, body["error"]) == (404, "NotFoundError")

    emulator.strict_workflows = False
    emulator.add_fault(Fault.server_error(on="trigger"))
    status, body, _ = await served.call("POST", "/runs/wf")
    assert (status, body["error"]) == (502, "ServerError")
    # a trigger that may have reached the platform is never sent twice
    assert emulator.trigger_requests == 2 and emulator.triggers("wf") == 0


async def test_a_client_disconnecting_from_result_stops_the_polls(
    served: Served, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    _, body, _ = await served.call("POST", "/runs/slow")
    token = body["token"]
    execution_id = wt.Execution.from_token(token).execution_id
    path = f"/runs/{token}/result"

    async def wait_for_result() -> None:
        # Its own session: cancelling this task closes the session and its connection,
        # which is what a browser or curl going away does.
        async with aiohttp.ClientSession() as http, http.get(served.url + path) as response:
            await response.read()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait_for_result)
        with anyio.fail_after(10):
            await emulator.wait_for_polls(execution_id, 2)  # the handler is polling
        tasks.cancel_scope.cancel()
    with anyio.fail_after(10):
        await served.app.wait_finished(path)  # the handler noticed and returned
    polls = emulator.polls(execution_id)
    await anyio.sleep(POLL_INTERVAL * 6)  # a window in which a leaked poller would poll again
    assert emulator.polls(execution_id) == polls
    assert not emulator.executions[0].finished  # the run itself goes on: only the wait stopped


# -- the asyncio service and the batch script, as subprocesses -----------------------------


@attrs.frozen
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def run_example(script: str, *args: str, emulator: Emulator, timeout: float) -> Completed:
    env = {**os.environ, **example_env(emulator)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    # -W error: a warning (an unclosed socket...) would show on stderr, which must stay empty
    command = [sys.executable, "-W", "error", str(EXAMPLES / script), *args]
    with anyio.fail_after(timeout):
        done = await anyio.run_process(command, env=env, check=False)
    return Completed(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_the_asyncio_service_runs_every_job_with_bounded_concurrency(
    emulator: Emulator,
) -> None:
    emulator.scenario("jobs", Scenario(duration=(0.05, 0.2), result=lambda p: {"done": p["job"]}))
    args = ("--jobs", "30", "--workers", "4", "--workflow", "jobs")
    run = await run_example("asyncio_service.py", *args, emulator=emulator, timeout=30)
    assert (run.returncode, run.stderr) == (0, "")
    *jobs, summary = run.stdout.splitlines()
    assert summary == "processed 30 jobs: 30 succeeded, 0 failed, 0 errors"
    assert sorted(jobs) == [f'job-{n:04d} succeeded {{"done": {n}}}' for n in range(30)]
    assert emulator.triggers("jobs") == 30
    assert sorted(e.payload["job"] for e in emulator.executions) == list(range(30))
    assert 1 < emulator.max_in_flight <= 4  # the workers ran side by side, never more than 4


async def test_the_asyncio_service_reports_failed_jobs_and_exits_1(emulator: Emulator) -> None:
    emulator.scenario("jobs", Scenario(status="failed", error={"message": "boom"}))
    args = ("--jobs", "3", "--workers", "2", "--workflow", "jobs")
    run = await run_example("asyncio_service.py", *args, emulator=emulator, timeout=30)
    assert (run.returncode, run.stderr) == (1, "")
    *jobs, summary = run.stdout.splitlines()
    assert summary == "processed 3 jobs: 0 succeeded, 3 failed, 0 errors"
    assert sorted(jobs) == [f"job-{n:04d} failed boom" for n in range(3)]


SUMMARY = re.compile(
    r"finished 10000 items in [\d.]+ s: 10000 succeeded, 0 failed, 0 errors; (\d+) HTTP requests"
)


async def test_the_batch_script_runs_10000_payloads_once_and_resumes_from_its_journal(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("bulk", Scenario(duration=(0.0, 0.05), result=lambda p: {"n": p["n"]}))
    output = tmp_path / "results.jsonl"
    args = (
        "--count", "10000",
        "--journal", str(tmp_path / "batch.sqlite"),
        "--workflow", "bulk",
        "--concurrency", "500",
        "--output", str(output),
    )  # fmt: skip

    first = await run_example("batch_script.py", *args, emulator=emulator, timeout=60)
    assert (first.returncode, first.stderr) == (0, "")
    *progress, summary = first.stdout.splitlines()
    assert [line.split("/")[0] for line in progress] == [str(n) for n in range(1000, 10001, 1000)]
    match = SUMMARY.fullmatch(summary)
    assert match is not None, summary
    assert int(match[1]) == emulator.requests  # what the script sent is what the platform got
    assert emulator.triggers("bulk") == 10000
    assert Counter(e.payload["n"] for e in emulator.executions) == Counter(range(10000))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["n"] for line in lines) == list(range(10000))
    assert all(line["result"] == {"n": line["n"]} for line in lines)

    requests = emulator.requests
    again = await run_example("batch_script.py", *args, emulator=emulator, timeout=60)
    assert (again.returncode, again.stderr) == (0, "")
    match = SUMMARY.fullmatch(again.stdout.splitlines()[-1])
    assert match is not None and match[1] == "0"
    assert emulator.requests == requests  # every outcome came from the journal
    assert emulator.triggers("bulk") == 10000
    assert sorted(json.loads(line)["n"] for line in output.read_text().splitlines()) == list(
        range(10000)
    )
