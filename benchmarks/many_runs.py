"""100,000 concurrent ``client.run`` calls in one process: errors, memory per execution.

    python benchmarks/many_runs.py                      # N = 100,000, runs of 60-90 s, 10 s polls
    python benchmarks/many_runs.py --n 20000 --min 20 --max 30 --interval 5

How a service with that many workflows in flight holds the SDK: one task per
``await client.run(...)`` (``asyncio.gather``), all on one ``AsyncClient``.
The emulator runs in its own process (``_fanout_server.py``, seeded run
durations). Printed: errors and timeouts (the target is none), wall and CPU
time, requests per execution, and the peak RSS above the idle client (after
the client opened, before any task), per execution (the target is <= 2 KB).
The figure includes the caller's own tasks: that is what the service pays.
To tell the two apart, a separate process first measures the caller's part
alone (``--callers-only``): N tasks shaped like the benchmark's, each awaiting
a future instead of ``client.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import workflow_trigger as wt  # noqa: E402


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def callers_only(n: int) -> None:
    """N tasks as the benchmark makes them, each waiting on a bare future: what the
    caller's own task, coroutine and gather cost, without the SDK."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]
    peak = 0

    async def one(i: int) -> None:
        try:
            await futures[i]
        except Exception:  # the same shape as the benchmark's caller
            return

    idle = _rss_kib()
    gathered = asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.sleep(1.0)
    peak = max(peak, _rss_kib())
    for future in futures:
        future.set_result(None)
    await gathered
    print(f"{(peak - idle) * 1024 / n:.0f}")


def measure_callers(n: int) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--callers-only", "--n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


async def main(args: argparse.Namespace, base_url: str) -> None:
    provider = wt.Codika(args.instance, api_key=args.key, base_url=base_url)
    errors: list[str] = []
    peak = 0

    async with wt.AsyncClient(
        provider,
        poll=wt.PollPolicy(interval=args.interval, jitter=0.1, timeout=None),
        max_concurrency=args.n,
        seed=0,
    ) as client:

        async def one(i: int) -> None:
            try:
                outcome = await client.run(args.workflow, {"i": i})
            except wt.WorkflowTriggerError as exc:
                errors.append(f"{i}: {exc!r}")
                return
            if not outcome.ok:
                errors.append(f"{i}: {outcome.status}")

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss_kib())
                await asyncio.sleep(0.5)

        idle = _rss_kib()
        cpu0, wall0 = _cpu(), time.perf_counter()
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(i) for i in range(args.n)))
        sampler.cancel()
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        sent = client.requests_sent
    peak = max(peak, _rss_kib())
    per_execution = (peak - idle) * 1024 / args.n
    callers = measure_callers(args.n)
    print(f"N = {args.n:,} concurrent client.run calls, runs of {args.min:g}-{args.max:g} s")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"wall: {wall:.1f} s, client CPU: {cpu:.1f} s ({cpu * 1e6 / sent:.0f} us/request)")
    print(f"requests: {sent:,} ({sent / args.n:.2f} per execution)")
    print(f"RSS: idle client {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    verdict = "PASS" if per_execution <= 2048 and not errors else "FAIL"
    print(f"{verdict}  peak RSS above the idle client: {per_execution:,.0f} bytes per execution")
    print(
        f"      of which the caller's own task, coroutine and gather (measured alone, "
        f"{callers:,.0f} B) and the SDK's part {per_execution - callers:,.0f} B"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--min", type=float, default=60.0)
    parser.add_argument("--max", type=float, default=90.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--workflow", default="fanout")
    parser.add_argument("--instance", default="pi_test")  # the emulator's default keys
    parser.add_argument("--key", default="ck_test_key")
    parser.add_argument("--callers-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callers_only:
        asyncio.run(callers_only(args.n))
        sys.exit(0)
    command = [sys.executable, str(HERE / "_fanout_server.py"), "--workflow", args.workflow]
    server = subprocess.Popen(
        [*command, "--min", str(args.min), "--max", str(args.max)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    try:
        asyncio.run(main(args, url))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
