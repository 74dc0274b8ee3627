"""The emulator process of the fan-out benchmark: a Codika ``Emulator`` plus a control route.

Run by ``benchmarks/fanout.py`` as its own process on loopback::

    python benchmarks/_fanout_server.py --seed 0 --workflow fanout --min 1 --max 3

It prints ``http://127.0.0.1:<port>`` on its first line once it answers, and
serves until its standard input closes (so it never outlives the benchmark).

The control route lives here, not in the package: ``GET /_bench/stats``
answers what the emulator counted since it started (requests, triggers,
polls, excluding the control requests themselves), when each execution ended
by the emulator's clock (``created_at + duration``, wall-clock seconds), and
samples of this process's CPU time, so the benchmark can tell whether the
emulator kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

from aiohttp import web

from workflow_trigger.testing import Emulator, Scenario

SAMPLE_EVERY = 0.1  # seconds between CPU samples


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class BenchRoutes:
    """``/_bench/stats``: counters, execution end times and CPU samples, as JSON."""

    platform = "bench"

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.control_requests = 0
        self.samples: list[tuple[float, float]] = [(time.time(), _cpu())]

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/_bench/stats", self.stats)]

    async def stats(self, request: web.Request) -> web.Response:
        self.control_requests += 1  # the emulator's middleware counted this one too
        self.samples.append((time.time(), _cpu()))
        emu = self.emulator
        ends: dict[str, float] = {
            ex.id: ex.created_at.timestamp() + ex.duration for ex in emu.executions
        }
        body: dict[str, Any] = {
            "requests": emu.requests - self.control_requests,
            "trigger_requests": emu.trigger_requests,
            "poll_requests": emu.poll_requests,
            "executions": len(emu.executions),
            "ends": ends,
            "cpu_samples": self.samples,
            "timeline": self.timeline(),
        }
        return web.json_response(body)

    def timeline(self, bucket: float = 0.5) -> dict[str, Any]:
        """Triggers and polls received per ``bucket`` seconds, from the first request on."""
        records = [r for r in self.emulator.request_log if r.operation in ("trigger", "poll")]
        if not records:
            return {"bucket": bucket, "start": None, "trigger": [], "poll": []}
        first = min(r.received_at for r in records)
        size = int((max(r.received_at for r in records) - first) / bucket) + 1
        counts: dict[str, list[int]] = {"trigger": [0] * size, "poll": [0] * size}
        for r in records:
            counts[str(r.operation)][int((r.received_at - first) / bucket)] += 1
        start = time.time() - (time.monotonic() - first)  # the first request, wall clock
        return {"bucket": bucket, "start": start, **counts}

    async def sample_cpu(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            self.samples.append((time.time(), _cpu()))


async def main(args: argparse.Namespace) -> None:
    emulator = Emulator(seed=args.seed, host="127.0.0.1", port=0)
    bench = BenchRoutes(emulator)
    emulator.add_route_set(bench)
    emulator.scenario(
        args.workflow,
        Scenario(duration=(args.min, args.max), result={"ok": True, "answer": 42}),
    )
    async with emulator:
        sampler = asyncio.create_task(bench.sample_cpu())
        print(emulator.base_url, flush=True)
        loop = asyncio.get_running_loop()
        # Serve until the parent closes our stdin (or dies).
        await loop.run_in_executor(None, sys.stdin.read)
        sampler.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workflow", default="fanout")
    parser.add_argument("--min", type=float, default=1.0)
    parser.add_argument("--max", type=float, default=3.0)
    asyncio.run(main(parser.parse_args()))
