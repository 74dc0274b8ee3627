"""Run one workflow over thousands of payloads from a plain script, resumably.

    python examples/batch_script.py --count 10000 --journal batch.sqlite   # see examples/README.md

How it works. The blocking ``wt.Client`` runs the SDK's event loop on a
thread of its own, so the script stays ordinary blocking code. ``run_many``
reads the payloads from a generator only as fast as runs finish (at most
``--concurrency`` in flight), so the input is never all in memory, and yields
each outcome as its run ends, in completion order.

The journal (one SQLite file) records every item before its trigger, its
execution token as soon as the platform answers, and its outcome. Interrupt
the script (Ctrl-C stops every poll at once; the runs go on on the platform)
and run it again with the same ``--journal``: finished items are answered from the journal without
a request, triggered ones are waited on, and no run the platform acknowledged
is triggered again. (Codika has no idempotency key: an item interrupted while
its trigger was on the wire is sent again, its outcome ``possibly_duplicated``.)
Each item's journal key is its ``n``, not its position, so the resume holds
even if the input comes back in another order.

Exit status: 0 when every item succeeded, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, TextIO

import workflow_trigger as wt

PROGRESS_EVERY = 1000


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


def payloads(count: int) -> Iterator[dict[str, Any]]:
    """The batch's input, produced lazily (in real life: lines of a file, rows of a query)."""
    for n in range(count):
        yield {"n": n, "text": f"document {n}"}


def item_key(payload: dict[str, Any]) -> int:
    return int(payload["n"])


def verdict(outcome: wt.Outcome[Any]) -> str:
    if outcome.exception is not None:
        return "errors"  # no outcome from the platform: refused trigger, our deadline...
    return "succeeded" if outcome.ok else "failed"


def record(outcome: wt.Outcome[Any]) -> dict[str, Any]:
    """One line of ``--output``."""
    error = outcome.error.message if outcome.error else None
    if outcome.exception is not None:
        error = f"{type(outcome.exception).__name__}: {outcome.exception}"
    status = outcome.status.value if outcome.status else None
    return {"n": outcome.key, "status": status, "result": outcome.result, "error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a workflow over many payloads, resumably.")
    parser.add_argument("--count", type=int, default=10_000, help="payloads to run")
    parser.add_argument("--journal", required=True, help="SQLite file; reuse it to resume")
    parser.add_argument("--workflow", default="main-workflow", help="the workflow id to run")
    parser.add_argument("--concurrency", type=int, default=200, help="runs in flight at most")
    parser.add_argument(
        "--output", help="write one JSON line per item here (a resumed run writes them all again)"
    )
    args = parser.parse_args(argv)

    tally: Counter[str] = Counter()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        out: TextIO | None = (
            stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else None
        )
        # max_concurrency: the client's own limit (default 1,000) must not cap --concurrency
        client = stack.enter_context(
            wt.Client(codika_from_env(), poll=poll_from_env(), max_concurrency=args.concurrency)
        )
        # `with` on the iterator: leaving the loop by an exception cancels the rest at once.
        outcomes = stack.enter_context(
            client.run_many(
                args.workflow,
                payloads(args.count),
                concurrency=args.concurrency,
                key=item_key,
                journal=args.journal,
            )
        )
        for done, outcome in enumerate(outcomes, 1):
            tally[verdict(outcome)] += 1
            if out is not None:
                out.write(json.dumps(record(outcome)) + "\n")
            if done % PROGRESS_EVERY == 0:
                print(
                    f"{done}/{args.count} done: {tally['succeeded']} succeeded, "
                    f"{tally['failed']} failed, {tally['errors']} errors "
                    f"({time.monotonic() - started:.1f} s)",
                    flush=True,
                )
        requests = client.requests_sent
    print(
        f"finished {tally.total()} items in {time.monotonic() - started:.1f} s: "
        f"{tally['succeeded']} succeeded, {tally['failed']} failed, {tally['errors']} errors; "
        f"{requests} HTTP requests"
    )
    return 0 if tally["succeeded"] == args.count else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        # The client has already cancelled every run it was polling; the journal kept the rest.
        print("interrupted: run again with the same --journal to resume", file=sys.stderr)
        raise SystemExit(130) from None
