"""An asyncio service: workers take jobs from a queue and run each one as a workflow.

    python examples/asyncio_service.py --jobs 20 --workers 4    # configuration: examples/README.md

How it works. Jobs arrive on an ``asyncio.Queue`` (in a real service, from a
message broker); a fixed pool of workers takes them, and each worker awaits
one workflow at a time, so the pool size bounds the runs in flight. All
workers share one ``AsyncClient``, the process's single connection pool and
concurrency limit. A job whose run fails, or that gets no outcome at all (a
refused trigger, our deadline), is reported and the worker goes on: one bad
job never stops the service.

Cancelling the service (Ctrl-C here) cancels every worker, and with them
every poll in flight, at once.

As a script it enqueues ``--jobs`` jobs, prints a line per job as it ends and
a summary, and exits: status 0 when every job succeeded, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import workflow_trigger as wt


def codika_from_env() -> wt.Codika:
    """Codika from the environment, so the same code runs against the emulator or the platform."""
    missing = [
        name for name in ("CODIKA_PROCESS_INSTANCE_ID", "CODIKA_API_KEY") if name not in os.environ
    ]
    if missing:
        raise SystemExit(f"set {' and '.join(missing)} (see examples/README.md)")
    return wt.Codika(
        os.environ["CODIKA_PROCESS_INSTANCE_ID"],
        api_key=os.environ["CODIKA_API_KEY"],
        base_url=os.environ.get("CODIKA_BASE_URL", "https://api.codika.io"),
    )


def poll_from_env() -> wt.PollPolicy | None:
    """``WORKFLOW_POLL_INTERVAL`` seconds between polls; unset, Codika's documented schedule."""
    interval = os.environ.get("WORKFLOW_POLL_INTERVAL")
    return wt.PollPolicy(interval=float(interval)) if interval else None


@dataclass(frozen=True)
class Job:
    id: str
    payload: dict[str, Any]


@dataclass
class Tally:
    succeeded: int = 0
    failed: int = 0  # the run ended in failure on the platform (an Outcome, not an exception)
    errors: int = 0  # no outcome: a refused trigger, our deadline, the network...


class WorkflowService:
    """Runs ``workflow_id`` for every job put on ``queue``, ``workers`` at a time."""

    def __init__(self, client: wt.AsyncClient, workflow_id: str, *, workers: int) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.workers = workers
        # Bounded, so a fast producer waits for the workers instead of piling up jobs.
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=workers * 2)
        self.tally = Tally()

    async def serve_until_drained(self, jobs: list[Job]) -> None:
        """Enqueue ``jobs`` and return once every one of them has been handled."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        drained = asyncio.create_task(self._enqueue_and_join(jobs))
        tasks = [drained, *workers]
        try:
            # A worker only ends by crashing (a bug): stop then, rather than wait for ever.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raises a crashed worker's exception
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _enqueue_and_join(self, jobs: list[Job]) -> None:
        for job in jobs:
            await self.queue.put(job)
        await self.queue.join()

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.handle(job)
            finally:
                self.queue.task_done()

    async def handle(self, job: Job) -> None:
        try:
            outcome = await self.client.run(self.workflow_id, job.payload)
        except wt.WorkflowTriggerError as exc:
            self.tally.errors += 1
            print(f"{job.id} error {type(exc).__name__}: {exc}", flush=True)
            return
        if outcome.ok:
            self.tally.succeeded += 1
            print(f"{job.id} succeeded {json.dumps(outcome.result)}", flush=True)
        else:
            self.tally.failed += 1
            reason = outcome.error.message if outcome.error else outcome.raw_status
            print(f"{job.id} failed {reason}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a workflow per job, a few at a time.")
    parser.add_argument("--jobs", type=int, default=20, help="jobs to process, then exit")
    parser.add_argument("--workers", type=int, default=4, help="runs in flight at most")
    parser.add_argument("--workflow", default="main-workflow", help="the workflow id to run")
    args = parser.parse_args(argv)

    jobs = [Job(id=f"job-{n:04d}", payload={"job": n}) for n in range(args.jobs)]
    async with wt.AsyncClient(codika_from_env(), poll=poll_from_env()) as client:
        service = WorkflowService(client, args.workflow, workers=args.workers)
        await service.serve_until_drained(jobs)
    tally = service.tally
    print(
        f"processed {args.jobs} jobs: {tally.succeeded} succeeded, {tally.failed} failed, "
        f"{tally.errors} errors"
    )
    return 0 if tally.succeeded == args.jobs else 1


if __name__ == "__main__":
    try:
        raise SystemExit(asyncio.run(main()))
    except KeyboardInterrupt:
        # asyncio.run cancelled main(), which cancelled the workers and their polls.
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
