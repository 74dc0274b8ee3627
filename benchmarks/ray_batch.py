"""workflow_trigger.ray against the emulator: correctness under a SIGKILL, CPU per execution,
and the scaling model. Printed (``--repeat K``: K runs of the overhead part).

    .venv/bin/pip install -e ".[test,ray,bench]"
    .venv/bin/python benchmarks/ray_batch.py            # --n 10000 --repeat 3 --skip-kill ...

1. Correctness: a 2,000-item batch over 2 workers against the in-process
   emulator (Codika, then the Runs API), one worker SIGKILLed once a quarter
   of the outcomes are in. Printed: outcomes delivered and distinct keys,
   runs started per key, keys started twice and whether each is flagged
   ``possibly_duplicated``.
2. Overhead: the client CPU per execution of ``Client.run_many`` in one process and of
   ``workflow_trigger.ray.run_many`` over 2 workers (driver + workers, read with
   ``getrusage`` and psutil from the workers' pids), on the same workload, each against
   a fresh emulator in its own process (``_fanout_server.py``), so the emulator's CPU is
   in neither figure. The Ray cluster is started before the clock starts; the workers'
   own start (importing the SDK and Ray) is counted, and shown apart as the fixed cost
   of a batch. The SDK's bytecode is compiled first, as a pip install does (this machine
   sets PYTHONDONTWRITEBYTECODE=1, so an editable install would make each worker compile
   the SDK from source). A third run is the control: one process doing one worker's
   share (N/W items at concurrency/W), its CPU times W, i.e. W processes without Ray,
   each at a W-th of the request rate (the SDK's CPU per request rises as a process's
   request rate falls). A fourth, the second control: W plain processes at once, without
   Ray, each with a W-th of the batch (N/W items at concurrency/W, started together once
   each has imported the SDK), their CPU summed: what any split into W processes costs on
   this machine, where they share its 2 cores with the emulator. Ray's own processes
   (raylet, GCS, agents, log monitor) are shown apart, in no figure. ``--repeat K`` runs
   them K times in alternating order and prints the median and range of each figure.
3. Scaling: requests per CPU-second of the client, measured, times cores.
4. Ray's own costs, with no SDK in them (``--floor``; ``--repeat 0 --skip-kill --floor`` for
   this part alone): an actor call to a trivial async actor (about what an ``exchange``
   carries: 25 items in, 6 KB out), back to back and one every 0.25 s (a worker's linger at
   this workload's interval), its CPU in the driver and in the actor's process; the CPU an
   idle actor's process spends per second (Ray's core worker wakes its main thread every
   10 ms); and what the actor's process spent from its start to its first answer.
"""

from __future__ import annotations

import argparse
import compileall
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import psutil
import ray

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
from workflow_trigger.testing import Emulator, Scenario

HERE = Path(__file__).resolve().parent
MANY = 1_000_000


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: Ray's core worker too
    return usage.ru_utime + usage.ru_stime


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


# -- 1. correctness ------------------------------------------------------------------------


async def correctness(platform: str, n: int) -> None:
    async with Emulator(seed=0, runs_api_rate_limit=MANY, runs_api_read_rate_limit=MANY) as emu:
        emu.scenario("wf", Scenario(duration=(0.5, 2.0), result=lambda p: p))
        provider: wt.Provider = (
            wt.RunsApi(emu.base_url, emu.runs_api_api_key)
            if platform == "runs_api"
            else wt.Codika("pi_test", api_key="ck_test_key", base_url=emu.base_url)
        )
        outcomes: list[wt.Outcome[Any]] = []
        started = time.perf_counter()
        async with wt_ray.run_many_async(
            provider,
            "wf",
            ({"k": i} for i in range(n)),
            workers=2,
            concurrency=400,
            key=lambda p: p["k"],
            poll=wt.PollPolicy(interval=0.25, jitter=0.0, timeout=120.0),
            rate_limit=1e6,
        ) as batch:
            async for outcome in batch:
                outcomes.append(outcome)
                if len(outcomes) == n // 4:
                    os.kill((await batch.worker_pids())[0], signal.SIGKILL)
        wall = time.perf_counter() - started
        keys = Counter(o.key for o in outcomes)
        runs = Counter(e.payload["k"] for e in emu.executions)
        twice = {k for k, c in runs.items() if c > 1}
        flagged = {o.key for o in outcomes if o.possibly_duplicated}
        print(
            f"  {platform:<8} {n} items, 2 workers, {batch.workers_lost} SIGKILLed: "
            f"{len(outcomes)} outcomes, {len(keys)} distinct keys (max {max(keys.values())} "
            f"per key), {sum(not o.ok for o in outcomes)} not ok; runs per key: max "
            f"{max(runs.values())}, {len(twice)} keys started twice, all flagged: "
            f"{twice <= flagged} ({len(flagged)} flagged); idempotent replays "
            f"{emu.idempotent_replays}; {wall:.1f} s"
        )


# -- 2. overhead -----------------------------------------------------------------------------


def requests_at(url: str) -> int:
    """The requests the emulator at ``url`` has answered so far."""
    with urllib.request.urlopen(f"{url}/_bench/stats") as answer:
        return int(json.load(answer)["requests"])


class Server:
    """A fresh emulator in its own process (so its CPU is nobody's)."""

    def __init__(self, low: float, high: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_fanout_server.py"),
                "--min",
                str(low),
                "--max",
                str(high),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def requests(self) -> int:
        return requests_at(self.url)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def codika(url: str) -> wt.Codika:
    return wt.Codika("pi_test", api_key="ck_test_key", base_url=url)


async def one_process(
    url: str, args: argparse.Namespace, n: int | None = None, concurrency: int | None = None
) -> dict[str, float]:
    n = args.n if n is None else n
    concurrency = args.concurrency if concurrency is None else concurrency
    cpu, started, ok = cpu_self(), time.perf_counter(), 0
    async with wt.AsyncClient(codika(url), poll=args.poll) as client:
        batch = client.run_many("fanout", ({"i": i} for i in range(n)), concurrency=concurrency)
        async with batch:
            async for outcome in batch:
                ok += outcome.ok
    return {"cpu": cpu_self() - cpu, "wall": time.perf_counter() - started, "ok": ok}


async def a_workers_share(url: str, args: argparse.Namespace) -> dict[str, float]:
    """One process doing what one worker does (N/W items at concurrency/W), its CPU times W:
    what W processes would cost without Ray, each at a W-th of the request rate."""
    w = args.workers
    r = await one_process(url, args, n=args.n // w, concurrency=max(1, args.concurrency // w))
    return {**r, "cpu": r["cpu"] * w, "ok": r["ok"] * w}


def at_once(url: str, args: argparse.Namespace) -> dict[str, float]:
    """W plain processes (``--share-of``) at once, each with N/W items at concurrency/W: a
    split into W processes without Ray. Each imports first, then all start together."""
    w = args.workers
    command = [sys.executable, __file__, "--share-of", url, "--n", str(args.n // w)]
    command += ["--concurrency", str(max(1, args.concurrency // w))]
    command += ["--interval", str(args.interval)]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(w)
    ]
    for child in children:  # each says "ready" once it has imported
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [json.loads(child.communicate()[0]) for child in children]
    return {
        "cpu": sum(r["cpu"] for r in results),
        "wall": max(r["wall"] for r in results),
        "ok": sum(r["ok"] for r in results),
    }


def share_of(url: str, args: argparse.Namespace) -> None:
    """``--share-of URL``: a child of ``at_once``: say ready, wait for go, run, print JSON."""
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(anyio.run(one_process, url, args)), flush=True)


def ray_daemons(exclude: set[int]) -> dict[int, float]:
    """CPU so far of Ray's own processes on this machine (raylet, GCS, agents, log monitor,
    idle workers): not the driver's, not the workers'."""
    found: dict[int, float] = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        line = " ".join(process.info["cmdline"] or ())
        if process.pid in exclude or not ("ray::" in line or "/ray/" in line):
            continue
        times = process.info["cpu_times"]
        found[process.pid] = times.user + times.system
    return found


async def over_ray(url: str, args: argparse.Namespace, n: int | None = None) -> dict[str, float]:
    n = args.n if n is None else n
    daemons = ray_daemons({os.getpid()})
    cpu, started, ok = cpu_self(), time.perf_counter(), 0
    pids: list[int] = []
    at_end, after = 0.0, daemons
    async with wt_ray.run_many_async(
        codika(url),
        "fanout",
        ({"i": i} for i in range(n)),
        workers=args.workers,
        concurrency=args.concurrency,
        poll=args.poll,
    ) as batch:
        async for outcome in batch:
            ok += outcome.ok
            if not pids:
                pids = await batch.worker_pids()
            if ok == n:
                at_end = cpu_of(pids)  # read before the batch ends and the workers go
                after = ray_daemons({os.getpid(), *pids})
    return {
        "cpu": cpu_self() - cpu + at_end,
        "driver": cpu_self() - cpu,
        "workers": at_end,
        # a worker placed in one of the idle processes Ray started with the cluster: what
        # that process had spent before the batch (counted in the figure all the same)
        "prestarted": sum(daemons.get(pid, 0.0) for pid in pids),
        "daemons": sum(c - daemons.get(pid, 0.0) for pid, c in after.items()),
        "wall": time.perf_counter() - started,
        "ok": ok,
    }


async def on_a_warm_pool(url: str, args: argparse.Namespace) -> dict[str, float]:
    """The batch on a pool (``AsyncWorkers``) that has already run one: the workers' start
    is paid before the clock, and their CPU is what they spent during this batch."""
    w = args.workers
    async with wt_ray.AsyncWorkers(codika(url), workers=w, poll=args.poll) as pool:
        async with pool.run_many("fanout", ({"i": i} for i in range(w)), concurrency=w) as warm:
            warmed = sum([o.ok async for o in warm])
        assert warmed == w, "the warm-up batch failed"
        pids = await pool.worker_pids()
        daemons = ray_daemons({os.getpid(), *pids})
        warm_up_requests = await anyio.to_thread.run_sync(requests_at, url)
        cpu, workers_cpu, started, ok = cpu_self(), cpu_of(pids), time.perf_counter(), 0
        batch = pool.run_many(
            "fanout", ({"i": i} for i in range(args.n)), concurrency=args.concurrency
        )
        async with batch:
            async for outcome in batch:
                ok += outcome.ok
        wall = time.perf_counter() - started
        driver, workers = cpu_self() - cpu, cpu_of(pids) - workers_cpu
        after = ray_daemons({os.getpid(), *pids})
    return {
        "cpu": driver + workers,
        "driver": driver,
        "workers": workers,
        "daemons": sum(c - daemons.get(pid, 0.0) for pid, c in after.items()),
        "wall": wall,
        "ok": ok,
        "warm_up_requests": warm_up_requests,
    }


def spread(values: list[float], fmt: str = ".1f") -> str:
    """The median, and the range when there is more than one value."""
    middle = format(statistics.median(values), fmt)
    if len(values) == 1:
        return middle
    return f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


ONE, SHARE, AT_ONCE = "one process", "a worker's share", "processes at once"
RAY, WARM = "ray", "ray, warm pool"


async def overhead(args: argparse.Namespace) -> None:
    server = Server(args.min, args.max)
    try:  # the fixed cost of a batch over Ray: start the workers, one item each, stop them
        fixed = await over_ray(server.url, args, n=args.workers)
    finally:
        server.close()

    async def processes_at_once(url: str, args: argparse.Namespace) -> dict[str, float]:
        return await anyio.to_thread.run_sync(at_once, url, args)

    runs = {
        ONE: one_process,
        SHARE: a_workers_share,
        AT_ONCE: processes_at_once,
        RAY: over_ray,
        WARM: on_a_warm_pool,
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for rep in range(args.repeat):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))  # drift hits all alike
        for name in order:
            server = Server(args.min, args.max)
            try:
                r = await runs[name](server.url, args)
                # a worker's share ran N/W items: its requests count W times, as its CPU did
                r["requests"] = server.requests() * (args.workers if name == SHARE else 1)
                r["requests"] -= r.pop("warm_up_requests", 0)
            finally:
                server.close()
            results[name].append(r)
            print(
                f"  [{rep + 1}/{args.repeat}] {name:<16} CPU {r['cpu']:.1f} s, wall "
                f"{r['wall']:.1f} s, {int(r['ok'])} ok",
                flush=True,
            )
    base = results[ONE]
    cpu_base = [r["cpu"] for r in base]
    labels = {
        ONE: "one process",
        SHARE: f"1/{args.workers} x {args.workers}",
        AT_ONCE: f"{args.workers} at once",
        RAY: f"ray, {args.workers} workers",
        WARM: "ray, warm pool",
    }
    print(f"\n  {args.repeat} repetition(s): median (min-max)")
    for name, rs in results.items():
        ratios = [r["cpu"] / b for r, b in zip(rs, cpu_base, strict=True)]
        print(
            f"  {labels[name]:<16} N={args.n}: {int(rs[0]['ok'])} ok, "
            f"{spread([r['requests'] for r in rs], '.0f')} requests, CPU "
            f"{spread([r['cpu'] for r in rs])} s = "
            f"{spread([r['cpu'] / args.n * 1e3 for r in rs], '.3f')} ms per execution, "
            f"{spread(ratios, '.2f')}x one process, wall {spread([r['wall'] for r in rs])} s"
        )
    apart = results[AT_ONCE]

    def over_apart(name: str) -> str:
        pairs = zip(results[name], apart, strict=True)
        return f"{spread([r['cpu'] / a['cpu'] for r, a in pairs], '.2f')}x"

    print(
        f"{'':17}over {args.workers} plain processes at once (the same split, no Ray): "
        f"a fresh batch {over_apart(RAY)}, a warm pool {over_apart(WARM)}"
    )
    rays = results[RAY]
    marginal = [(r["cpu"] - fixed["cpu"]) / b for r, b in zip(rays, cpu_base, strict=True)]
    print(
        f"{'':17}driver {spread([r['driver'] for r in rays])} s + workers "
        f"{spread([r['workers'] for r in rays])} s (of which "
        f"{spread([r['prestarted'] for r in rays])} s spent before the batch, as idle "
        f"processes Ray started with the cluster); the fixed cost of a batch (workers "
        f"started, {args.workers} items, stopped) is {fixed['cpu']:.1f} s, so each execution "
        f"costs {spread(marginal, '.2f')}x one process; Ray's own processes (raylet, GCS, "
        f"agents, log monitor), in no figure: {spread([r['daemons'] for r in rays])} s"
    )
    warms = results[WARM]
    print(
        f"{'':17}driver {spread([r['driver'] for r in warms])} s + workers "
        f"{spread([r['workers'] for r in warms])} s, over the batch only (the pool started "
        f"and ran a batch of {args.workers} before the clock); Ray's own processes, in no "
        f"figure: {spread([r['daemons'] for r in warms])} s"
    )
    per_core = statistics.median(r["requests"] / r["cpu"] for r in base)
    cores = psutil.cpu_count() or 1
    # per request, on a pool past its start: what a long CPU-bound batch pays
    ratio = statistics.median(
        (r["cpu"] / r["requests"]) / (b["cpu"] / b["requests"])
        for r, b in zip(warms, base, strict=True)
    )
    driver_ms = statistics.median(r["driver"] / r["requests"] * 1e3 for r in warms)
    print(
        f"\n3. Scaling model: this machine has {cores} cores, shared with the emulator, so "
        f"4 workers on 4 free cores cannot be measured here.\n"
        f"  one process: {per_core:.0f} requests per CPU-second of the client (median of "
        f"the runs above)\n"
        f"  on a warm pool each request costs {ratio:.2f}x that, so a CPU-bound batch with W "
        f"workers on W free cores makes about W x {per_core / ratio:.0f} requests per "
        f"second, until the driver, at {driver_ms:.3f} ms of CPU per request, fills its own "
        f"core at ~{1e3 / driver_ms:,.0f} req/s (~{1e3 / driver_ms / (per_core / ratio):.0f} "
        f"workers):\n"
        + "\n".join(
            f"    {w:>2} workers: ~{w * per_core / ratio:,.0f} req/s ({w / ratio:.1f}x one process)"
            for w in (1, 2, 4, 8, 16)
        )
    )


@ray.remote
class _Echo:
    """A trivial async actor: what a call costs Ray, with no SDK on either side."""

    async def pid(self) -> int:
        return os.getpid()

    async def exchange(self, batch: str, works: list[Any]) -> bytes:
        return b"x" * 6_000


async def ray_floor() -> None:
    actor = _Echo.options(max_restarts=0, max_task_retries=0).remote()  # type: ignore[attr-defined]
    pid = await actor.pid.remote()
    print(f"  a trivial actor's process, from its start to its first answer: {cpu_of([pid]):.2f} s")
    works = [(i, {"i": i}, None, None) for i in range(25)]
    for _ in range(20):  # warm
        await actor.exchange.remote("b", works)
    actor_cpu, started = cpu_of([pid]), time.perf_counter()
    await anyio.sleep(5.0)
    idle = (cpu_of([pid]) - actor_cpu) / (time.perf_counter() - started)
    print(f"  an idle actor's process: {idle * 1e3:.1f} ms of CPU per second")
    for calls, gap in ((300, 0.0), (40, 0.25)):
        cpu, actor_cpu, started = cpu_self(), cpu_of([pid]), time.perf_counter()
        for _ in range(calls):
            await actor.exchange.remote("b", works)
            await anyio.sleep(gap)
        wall = time.perf_counter() - started
        driver, worker = (cpu_self() - cpu) / calls, (cpu_of([pid]) - actor_cpu) / calls
        call = worker - idle * wall / calls  # the idle share apart
        print(
            f"  {calls} calls, {'back to back' if not gap else f'one every {gap} s'}: "
            f"{(driver + call) * 1e3:.1f} ms of CPU a call (driver {driver * 1e3:.2f}, "
            f"actor's process {call * 1e3:.2f} past its idle share), {wall:.1f} s"
        )
    ray.kill(actor)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--kill-n", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min", type=float, default=1.0)
    parser.add_argument("--max", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--floor", action="store_true", help="also part 4, Ray's own costs")
    parser.add_argument("--share-of", metavar="URL", help=argparse.SUPPRESS)  # at_once's child
    args = parser.parse_args()
    args.poll = wt.PollPolicy(interval=args.interval, jitter=0.1, timeout=120.0)
    if args.share_of:
        share_of(args.share_of, args)
        return
    # each worker imports the SDK: from its bytecode, as after a pip install (which compiles
    # it), not from source, which an editable install under PYTHONDONTWRITEBYTECODE=1 (this
    # machine's setting) makes every worker compile anew (~0.15 s of CPU each)
    compileall.compile_dir(Path(wt.__file__).parent, quiet=1)
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        if not args.skip_kill:
            print("1. Correctness: a worker SIGKILLed mid-batch")
            for platform in ("codika", "runs_api"):
                anyio.run(correctness, platform, args.kill_n)
        if args.repeat:  # --repeat 0: the correctness part alone
            print(
                f"\n2. Client CPU per execution, durations {args.min}-{args.max} s, poll every "
                f"{args.interval} s, concurrency {args.concurrency}"
            )
            anyio.run(overhead, args)
        if args.floor:
            print("\n4. Ray's own costs, no SDK: a trivial async actor")
            anyio.run(ray_floor)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
