"""One client of the fan-out benchmark, in a fresh process of its own.

Run by ``benchmarks/fanout.py``::

    python benchmarks/_fanout_worker.py CLIENT --n N --base-url URL --out FILE [...]

It imports only what CLIENT needs, records the idle baseline (CPU time and
peak RSS after the imports), does the work (trigger N executions, poll each
until it ends, collect the results), then reads ``getrusage(RUSAGE_SELF)``
again and writes a JSON report to FILE: wall time, CPU seconds of the work,
peak RSS and its baseline, and for every execution the wall-clock time
(``time.time()``) at which the caller received its terminal answer.

The clients (see ``benchmarks/README.md``):

- ``sdk-async``: ``AsyncClient.run_many(concurrency=N)``, ``max_concurrency=N``;
- ``sdk-sync``: the blocking facade ``Client.run_many``, the same options;
- ``sdk-tasks``: N concurrent ``client.run`` tasks (``asyncio.gather``), the same options;
- ``sdk-journal``: ``sdk-async`` with ``journal=`` a SQLite file in a
  temporary folder (each item's intent, token and outcome committed);
- ``aiohttp``: the floor: one ``ClientSession``, ``asyncio.gather`` of N
  coroutines, each POST, then sleep / GET until terminal;
- ``httpx``: ``httpx.AsyncClient`` + ``asyncio.gather``, bounded: 5 pooled
  connections (``--httpx-connections``) and a semaphore of as many requests in
  flight, no pool timeout;
- ``httpx-default``: the same with httpx's default settings (no semaphore);
- ``requests``: ``requests`` with a session per thread, 64 threads.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

TERMINAL_RAW = frozenset({"success", "failed", "error"})
#: httpx's bound: its pool scans every connection for every queued request, so a pool as
#: large as aiohttp's 100 costs far more CPU than a small one (see benchmarks/README.md)
HTTPX_CONNECTIONS = 5


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss  # (seconds, KiB on Linux)


class Job:
    """What every client needs: the endpoints, and where it records what it saw."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.n: int = args.n
        self.base: str = args.base_url
        self.instance: str = args.instance
        self.key: str = args.api_key
        self.workflow: str = args.workflow
        self.interval: float = args.interval
        self.jitter: float = args.jitter
        self.httpx_connections: int = args.httpx_connections
        self.trigger_url = f"{self.base}/webhook/{self.instance}/{self.workflow}"
        self.status_prefix = f"{self.base}/status/{self.instance}/"
        self.headers = {"X-API-Key": self.key}
        self.seen: dict[str, float] = {}  # execution id -> time.time() of the terminal answer
        self.internal: dict[str, float] = {}  # sdk: Outcome.finished_at (inside the SDK)
        self.results: list[Any] = []
        self.failures: list[str] = []

    def payload(self, i: int) -> dict[str, Any]:
        return {"i": i}

    def record(self, execution_id: str, status: str, result: Any, seen: float) -> None:
        self.seen[execution_id] = seen
        self.results.append(result)
        if status != "success":
            self.failures.append(f"{execution_id}: {status}")


# -- the SDK ------------------------------------------------------------------------------


def _sdk_options(job: Job) -> tuple[Any, dict[str, Any]]:
    import workflow_trigger as wt

    provider = wt.Codika(job.instance, api_key=job.key, base_url=job.base)
    options = {
        "poll": wt.PollPolicy(interval=job.interval, jitter=job.jitter, timeout=900.0),
        "max_concurrency": max(job.n, 1000),
    }
    return provider, options


def _sdk_record(job: Job, outcome: Any, seen: float) -> None:
    if outcome.exception is not None or outcome.execution is None:
        job.failures.append(f"item {outcome.index}: {outcome.exception!r}")
        return
    execution_id = outcome.execution.execution_id
    # For Codika, finished_at is when the SDK's poll saw the end (Codika reports no end time).
    if outcome.finished_at is not None:
        job.internal[execution_id] = outcome.finished_at.timestamp()
    job.record(execution_id, outcome.raw_status or "?", outcome.result, seen)


def run_sdk_async(job: Job, journal: bool = False) -> dict[str, Any]:
    import asyncio
    import os
    import tempfile

    import workflow_trigger as wt

    provider, options = _sdk_options(job)

    async def main(path: str | None) -> int:
        async with wt.AsyncClient(provider, **options) as client:
            payloads = (job.payload(i) for i in range(job.n))
            batch = client.run_many(job.workflow, payloads, concurrency=job.n, journal=path)
            async for outcome in batch:
                _sdk_record(job, outcome, time.time())
            return client.requests_sent

    if not journal:
        return {"client_requests": asyncio.run(main(None)), "package": wt.__file__}
    with tempfile.TemporaryDirectory() as folder:  # the journal's file, on the local disk
        path = os.path.join(folder, "batch.sqlite")
        sent = asyncio.run(main(path))
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    return {"client_requests": sent, "package": wt.__file__, "journal_bytes": size}


def run_sdk_tasks(job: Job) -> dict[str, Any]:
    """N concurrent ``client.run`` calls, each its own task: how an asyncio service or a
    FastAPI app with N requests in flight holds the SDK."""
    import asyncio

    import workflow_trigger as wt

    provider, options = _sdk_options(job)

    async def one(client: wt.AsyncClient, i: int) -> None:
        try:
            outcome = await client.run(job.workflow, job.payload(i))
        except wt.WorkflowTriggerError as exc:
            job.failures.append(f"item {i}: {exc!r}")
            return
        _sdk_record(job, outcome, time.time())

    async def main() -> int:
        async with wt.AsyncClient(provider, **options) as client:
            await asyncio.gather(*(one(client, i) for i in range(job.n)))
            return client.requests_sent

    return {"client_requests": asyncio.run(main()), "package": wt.__file__}


def run_sdk_journal(job: Job) -> dict[str, Any]:
    return run_sdk_async(job, journal=True)


def run_sdk_sync(job: Job) -> dict[str, Any]:
    import workflow_trigger as wt

    provider, options = _sdk_options(job)
    with wt.Client(provider, **options) as client:
        payloads = (job.payload(i) for i in range(job.n))
        for outcome in client.run_many(job.workflow, payloads, concurrency=job.n):
            _sdk_record(job, outcome, time.time())
        sent = client.requests_sent
    return {"client_requests": sent, "package": wt.__file__}


# -- the floor: raw aiohttp ---------------------------------------------------------------


def run_aiohttp(job: Job) -> dict[str, Any]:
    import asyncio

    import aiohttp

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with session.post(
            job.trigger_url, json={"payload": job.payload(i)}, headers=job.headers
        ) as response:
            execution_id = (await response.json())["executionId"]
        url = job.status_prefix + execution_id
        while True:
            await asyncio.sleep(job.interval)
            async with session.get(url, headers=job.headers) as response:
                execution = (await response.json())["execution"]
            if execution["status"] in TERMINAL_RAW:
                job.record(
                    execution_id, execution["status"], execution.get("resultData"), time.time()
                )
                return

    async def main() -> None:
        async with aiohttp.ClientSession() as session:  # default connector: 100 connections
            await asyncio.gather(*(one(session, i) for i in range(job.n)))

    asyncio.run(main())
    return {}


# -- httpx ----------------------------------------------------------------------------------


def _run_httpx(job: Job, *, bounded: bool) -> dict[str, Any]:
    import asyncio
    import contextlib

    import httpx

    errors: dict[str, int] = {}

    async def one(client: httpx.AsyncClient, gate: Any, i: int) -> None:
        try:
            async with gate:
                response = await client.post(
                    job.trigger_url, json={"payload": job.payload(i)}, headers=job.headers
                )
            execution_id = response.json()["executionId"]
            url = job.status_prefix + execution_id
            while True:
                await asyncio.sleep(job.interval)
                async with gate:
                    response = await client.get(url, headers=job.headers)
                execution = response.json()["execution"]
                if execution["status"] in TERMINAL_RAW:
                    job.record(
                        execution_id, execution["status"], execution.get("resultData"), time.time()
                    )
                    return
        except Exception as exc:  # httpx-default: PoolTimeout and friends; count them
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            job.failures.append(f"item {i}: {name}")

    async def main() -> None:
        if bounded:
            bound = job.httpx_connections
            limits = httpx.Limits(max_connections=bound, max_keepalive_connections=bound)
            timeout = httpx.Timeout(30.0, pool=None)
            gate: Any = asyncio.Semaphore(bound)
            client = httpx.AsyncClient(limits=limits, timeout=timeout)
        else:
            gate = contextlib.nullcontext()  # no bound: httpx's own defaults only
            client = httpx.AsyncClient()
        async with client:
            await asyncio.gather(*(one(client, gate, i) for i in range(job.n)))

    asyncio.run(main())
    return {"errors": errors}


def run_httpx(job: Job) -> dict[str, Any]:
    return _run_httpx(job, bounded=True)


def run_httpx_default(job: Job) -> dict[str, Any]:
    return _run_httpx(job, bounded=False)


# -- requests + threads ---------------------------------------------------------------------


def run_requests(job: Job) -> dict[str, Any]:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()
    sessions: list[requests.Session] = []

    def session() -> requests.Session:
        found = getattr(local, "session", None)
        if found is None:
            found = local.session = requests.Session()
            found.headers.update(job.headers)
            sessions.append(found)
        return found

    def one(i: int) -> None:
        s = session()
        execution_id = s.post(job.trigger_url, json={"payload": job.payload(i)}).json()[
            "executionId"
        ]
        url = job.status_prefix + execution_id
        while True:
            time.sleep(job.interval)
            execution = s.get(url).json()["execution"]
            if execution["status"] in TERMINAL_RAW:
                job.record(
                    execution_id, execution["status"], execution.get("resultData"), time.time()
                )
                return

    with ThreadPoolExecutor(max_workers=64) as pool:
        for future in [pool.submit(one, i) for i in range(job.n)]:
            future.result()
    for s in sessions:
        s.close()
    return {}


CLIENTS = {
    "sdk-async": run_sdk_async,
    "sdk-sync": run_sdk_sync,
    "sdk-journal": run_sdk_journal,
    "sdk-tasks": run_sdk_tasks,
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
    "httpx-default": run_httpx_default,
    "requests": run_requests,
}

IMPORTS = {
    "sdk-async": ("asyncio", "workflow_trigger"),
    "sdk-sync": ("workflow_trigger",),
    "sdk-journal": ("asyncio", "sqlite3", "workflow_trigger"),
    "sdk-tasks": ("asyncio", "workflow_trigger"),
    "aiohttp": ("asyncio", "aiohttp"),
    "httpx": ("asyncio", "httpx"),
    "httpx-default": ("asyncio", "httpx"),
    "requests": ("concurrent.futures", "requests"),
}


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--instance", default="pi_test")
    parser.add_argument("--api-key", default="ck_test_key")
    parser.add_argument("--workflow", default="fanout")
    parser.add_argument("--interval", type=float, default=1.5)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--httpx-connections", type=int, default=HTTPX_CONNECTIONS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the work to this file")
    args = parser.parse_args(argv)

    import importlib

    for module in IMPORTS[args.client]:
        importlib.import_module(module)  # so the baseline below holds the client's imports
    job = Job(args)
    cpu0, maxrss0 = _usage()
    rss0 = _rss_now_kib()
    start = time.time()
    t0 = time.perf_counter()
    if args.profile:
        import cProfile

        # CPU time, not wall time: waiting in epoll is not the client's cost. Only this
        # thread is profiled (sdk-sync works in its portal thread: profile sdk-async).
        profiler = cProfile.Profile(time.process_time)
        extra = profiler.runcall(CLIENTS[args.client], job)
        profiler.dump_stats(args.profile)
    else:
        extra = CLIENTS[args.client](job)
    wall = time.perf_counter() - t0
    end = time.time()
    cpu1, maxrss1 = _usage()

    report = {
        "client": args.client,
        "n": args.n,
        "start": start,
        "end": end,
        "wall": wall,
        "cpu": cpu1 - cpu0,
        "cpu_with_imports": cpu1,
        "maxrss_baseline_kib": maxrss0,
        "rss_baseline_kib": rss0,
        "maxrss_kib": maxrss1,
        "completed": len(job.seen),
        "failures": job.failures[:20],
        "failure_count": len(job.failures),
        "seen": job.seen,
        "internal": job.internal,
        **extra,
    }
    with open(args.out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
