"""The ``workflow-trigger`` command.

``workflow-trigger demo`` starts the built-in emulator in this process, runs a
batch through ``AsyncClient.run_many`` with a live progress bar, and prints a
summary: no network, no keys.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio

from . import AsyncClient, Codika, PollPolicy, RetryPolicy
from .testing import Emulator, Fault, Scenario

__all__ = ["main"]

_DEMO_EPILOG = """\
example:
  workflow-trigger demo --count 200 --concurrency 50
"""


async def _demo(count: int, concurrency: int, seed: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    async with Emulator(seed=seed) as emulator:
        emulator.scenario(
            "enrich-lead",
            Scenario(duration=(0.3, 1.5), result=lambda p: {"lead": p["lead"], "score": 0.9}),
        )
        # A little turbulence, as on a real platform: the client retries through it.
        emulator.add_fault(Fault.server_error(count=5, status=503, on="poll"))
        emulator.add_fault(Fault.rate_limited(count=3, retry_after=0.2, on="poll"))
        emulator.add_fault(Fault.drop(count=2, on="poll"))
        provider = Codika(
            emulator.codika_instance_id, api_key=emulator.codika_api_key, base_url=emulator.base_url
        )
        console.print(
            f"Emulator on [bold]{emulator.base_url}[/]: running {count} executions of "
            f"'enrich-lead', {concurrency} at a time"
        )
        statuses: Counter[str] = Counter()
        started = time.perf_counter()
        policy = PollPolicy(interval=0.25, jitter=0.2, timeout=30)
        retry = RetryPolicy(attempts=4, backoff=0.05)
        async with AsyncClient(provider, poll=policy, retry=retry, seed=seed) as client:
            payloads = ({"lead": f"lead-{i}"} for i in range(count))
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("executions", total=count)
                async for outcome in client.run_many(
                    "enrich-lead", payloads, concurrency=concurrency
                ):
                    label = outcome.status.value if outcome.status else "error"
                    if outcome.exception is not None:
                        label = type(outcome.exception).__name__
                    statuses[label] += 1
                    progress.advance(task)
            wall = time.perf_counter() - started
            sent = client.requests_sent
        table = Table(title="Summary")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("succeeded", str(statuses.pop("succeeded", 0)))
        table.add_row("failed", str(sum(statuses.values())))
        for label, n in sorted(statuses.items()):
            table.add_row(f"  {label}", str(n))
        table.add_row("requests made", str(sent))
        table.add_row("requests per execution", f"{sent / max(count, 1):.2f}")
        table.add_row("faults survived", str(10 - emulator.faults_remaining))
        table.add_row("wall time", f"{wall:.2f} s")
        console.print(table)
        return 0 if not statuses else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="workflow-trigger",
        description="Trigger remote workflows and wait for their results.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a batch against the built-in emulator (no network, no keys)",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--count", type=int, default=200, help="executions to run (default 200)")
    demo.add_argument("--concurrency", type=int, default=50, help="in flight at once (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the emulator's randomness")
    args: Any = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return anyio.run(_demo, args.count, args.concurrency, args.seed)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
