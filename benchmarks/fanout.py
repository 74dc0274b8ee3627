"""Fan-out benchmark: N executions triggered and polled at once, the SDK against its peers.

    python benchmarks/fanout.py                       # N = 1,000 and 10,000, 3 repetitions
    python benchmarks/fanout.py --quick               # N = 200, 1 repetition (~30 s)
    python benchmarks/fanout.py --n 1000 --repeat 5 --clients sdk-async aiohttp
    python benchmarks/fanout.py --profile sdk-async aiohttp --n 10000   # py-spy, one run each
    python benchmarks/fanout.py --report runs.json    # the report of a --json file again

Every run is two fresh processes on loopback: the Codika emulator
(``_fanout_server.py``, seeded, executions of 1-3 s) and one client
(``_fanout_worker.py``), pinned to separate cores when there are two. The
client triggers N executions of one workflow, polls each every 1.5 s until it
ends, and collects the results. Clients alternate round-robin across the
repetitions (the order rotates each time) so machine noise hits them alike.

Figures per client and N (medians over the repetitions):

- wall: seconds from creating the client to the last result;
- CPU/1k: the client process's user+sys CPU seconds (``getrusage(RUSAGE_SELF)``,
  all its threads, the imports excluded) per 1,000 executions;
- peak RSS: ``ru_maxrss`` of the client process, and its growth over the idle
  baseline of the same process after its imports;
- req/exec: HTTP requests the emulator received, per execution;
- delay mean / p95: from a run's end on the emulator's clock
  (``created_at + duration``) to the moment the caller received its terminal
  answer (``time.time()`` in both processes, same machine);
- CPU/request: the same CPU over the requests the emulator received;
- emu CPU: the emulator's CPU use during the run (mean, and the busiest
  1-second window); near 100 % means it, not the client, was the bottleneck;
- other load: cores used by other processes meanwhile (noise).

See ``benchmarks/README.md`` for the targets and a measured table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _fanout_profile import compare_packages, format_timeline, read_pyspy, summarise_pyspy
from _fanout_report import BACKGROUND, report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER = HERE / "_fanout_server.py"
WORKER = HERE / "_fanout_worker.py"


PACKAGE_ROOT = ROOT  # where the client and emulator processes import workflow_trigger from


def _freeze() -> None:
    """Run copies of the package and of the server and worker scripts, taken now: a long
    run measures one version of the SDK even while others commit to the work tree."""
    global SERVER, WORKER, PACKAGE_ROOT
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="fanout-"))
    atexit.register(shutil.rmtree, folder, True)
    SERVER = Path(shutil.copy(HERE / "_fanout_server.py", folder))
    WORKER = Path(shutil.copy(HERE / "_fanout_worker.py", folder))
    shutil.copytree(
        ROOT / "workflow_trigger",
        folder / "workflow_trigger",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    PACKAGE_ROOT = folder


ALL_CLIENTS = (
    "sdk-async",
    "sdk-sync",
    "sdk-journal",
    "sdk-tasks",
    "aiohttp",
    "httpx",
    "httpx-default",
    "requests",
)
DEFAULT_CLIENTS = ALL_CLIENTS
#: clients that only run up to this N (a thread per execution in flight does not scale)
SMALL_ONLY = {"requests": 1000, "httpx-default": 1000}
WORKER_TIMEOUT = 900.0


# -- one run ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = (str(PACKAGE_ROOT), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def _pin(core: int | None) -> Any:
    if core is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def _cores(pin: bool) -> tuple[int | None, int | None]:
    """(emulator core, client core), or no pinning."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


class EmulatorProcess:
    """The emulator in its own process; it stops when its stdin closes."""

    def __init__(self, args: argparse.Namespace, core: int | None) -> None:
        command = [sys.executable, str(SERVER), "--seed", str(args.seed)]
        command += ["--min", str(args.duration[0]), "--max", str(args.duration[1])]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
            preexec_fn=_pin(core),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the emulator did not start (it printed {line!r})")
        self.base_url = line

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/_bench/stats", timeout=60) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_once(
    args: argparse.Namespace,
    client: str,
    n: int,
    *,
    profile: str | None = None,
    profiler: str = "cprofile",
) -> dict[str, Any]:
    """One client run against a fresh emulator: the worker's report plus the figures."""
    emu_core, client_core = _cores(args.pin)
    emulator = EmulatorProcess(args, emu_core)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.json"
            command = [sys.executable, str(WORKER), client, "--n", str(n)]
            command += ["--base-url", emulator.base_url]
            if profile is not None and profiler == "cprofile":
                command += ["--profile", profile]
            elif profile is not None:  # py-spy: sampled from outside, every thread, CPU only
                spy = ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", profile]
                command = [*spy, "--", *command]
            command += ["--interval", str(args.interval), "--jitter", str(args.jitter)]
            command += ["--httpx-connections", str(args.httpx_connections)]
            command += ["--out", str(out)]
            busy_before, life_start = _machine_busy(), time.time()
            try:
                done = subprocess.run(
                    command,
                    env=_env(),
                    preexec_fn=_pin(client_core),
                    capture_output=True,
                    text=True,
                    timeout=WORKER_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                return {"client": client, "n": n, "error": f"timed out after {WORKER_TIMEOUT} s"}
            if done.returncode != 0 or not out.exists():
                tail = (done.stderr or "").strip().splitlines()[-5:]
                return {"client": client, "n": n, "error": " | ".join(tail) or "no report"}
            busy, life_end = _machine_busy() - busy_before, time.time()
            report = json.loads(out.read_text())
        stats = emulator.stats()
        report.update(machine_busy=busy, process_start=life_start, process_end=life_end)
    finally:
        emulator.stop()
    return figures(report, stats)


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(threshold: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until the machine's busy cores over 1 s fall below
    ``threshold``; the load last seen. The machine may be shared: other people's tests."""
    deadline = time.monotonic() + patience
    while True:
        before = _machine_busy()
        time.sleep(1.0)
        load = _machine_busy() - before
        if load != load or load < threshold or time.monotonic() > deadline:
            return load
        time.sleep(1.0)


def _emulator_cpu_between(samples: list[list[float]], start: float, end: float) -> float:
    """The emulator's CPU seconds between two wall-clock times (nearest samples outside)."""
    before = [c for t, c in samples if t <= start]
    after = [c for t, c in samples if t >= end]
    first = before[-1] if before else samples[0][1]
    last = after[0] if after else samples[-1][1]
    return last - first


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _emulator_cpu(samples: list[list[float]], start: float, end: float) -> tuple[float, float]:
    """The emulator's CPU share of one core over [start, end]: mean, and busiest ~1 s window."""
    inside = [(t, c) for t, c in samples if start - 0.2 <= t <= end + 0.2]
    if len(inside) < 2:
        return float("nan"), float("nan")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    mean = (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")
    peak = 0.0
    j = 0
    for i, (t, c) in enumerate(inside):
        while j < i and t - inside[j + 1][0] >= 1.0:
            j += 1
        tj, cj = inside[j]
        if t - tj >= 0.9:
            peak = max(peak, (c - cj) / (t - tj))
    return mean, peak if peak else mean


def figures(report: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    n = report["n"]
    ends: dict[str, float] = stats["ends"]
    seen: dict[str, float] = report["seen"]
    delays = [seen[i] - ends[i] for i in seen if i in ends]
    internal = [t - ends[i] for i, t in report.get("internal", {}).items() if i in ends]
    emu_mean, emu_peak = _emulator_cpu(stats["cpu_samples"], report["start"], report["end"])
    growth = report["maxrss_kib"] - report["maxrss_baseline_kib"]
    # Everything else the machine did meanwhile (other people's tests, the OS): noise.
    life = report["process_end"] - report["process_start"]
    emu = _emulator_cpu_between(
        stats["cpu_samples"], report["process_start"], report["process_end"]
    )
    other = report["machine_busy"] - report["cpu_with_imports"] - emu
    background = max(other, 0.0) / life if life > 0 else float("nan")
    return {
        "client": report["client"],
        "n": n,
        "completed": report["completed"],
        "failures": report["failure_count"],
        "failure_sample": report["failures"][:3],
        "errors": report.get("errors", {}),
        "wall_s": report["wall"],
        "cpu_s": report["cpu"],
        "cpu_per_1k_s": report["cpu"] / n * 1000,
        "cpu_with_imports_s": report["cpu_with_imports"],
        "cpu_us_per_request": (
            report["cpu"] / stats["requests"] * 1e6 if stats["requests"] else float("nan")
        ),
        "peak_rss_mib": report["maxrss_kib"] / 1024,
        "rss_growth_mib": growth / 1024,
        "rss_growth_kib_per_exec": growth / n,
        "requests": stats["requests"],
        "requests_per_exec": stats["requests"] / n,
        "trigger_requests": stats["trigger_requests"],
        "poll_requests": stats["poll_requests"],
        "client_requests": report.get("client_requests"),
        "delay_mean_s": statistics.fmean(delays) if delays else float("nan"),
        "delay_p95_s": _percentile(delays, 0.95),
        "delay_max_s": max(delays) if delays else float("nan"),
        "sdk_internal_delay_mean_s": statistics.fmean(internal) if internal else None,
        "sdk_internal_delay_p95_s": _percentile(internal, 0.95) if internal else None,
        "emu_cpu_mean": emu_mean,
        "emu_cpu_peak": emu_peak,
        "executions_started": stats["executions"],
        "background_cores": background,
        "timeline": stats.get("timeline"),
        "client_start": report["start"],
        "package": report.get("package"),
    }


def _git_state() -> str:
    """The commit measured, and whether the package had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "workflow_trigger"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "git state unknown"
    return f"commit {head or '?'}" + (
        " + uncommitted changes in workflow_trigger/" if dirty else ""
    )


# -- profiles ---------------------------------------------------------------------------------


def profile(args: argparse.Namespace, clients: list[str], n: int) -> None:
    import pstats
    import shutil

    profiler = "py-spy" if shutil.which("py-spy") and not args.cprofile else "cprofile"
    suffix = "txt" if profiler == "py-spy" else "prof"
    folder = Path(args.profile_out or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, tuple[dict[str, Any], float, int]] = {}
    _freeze()
    for client in clients:
        path = str(folder / f"fanout-{client}-{n}.{suffix}")
        if args.quiet_wait > 0:
            wait_for_quiet(BACKGROUND, args.quiet_wait)
        result = run_once(args, client, n, profile=path, profiler=profiler)
        print(f"=== {client}, N={n:,}")
        shown = ("wall_s", "cpu_s", "rss_growth_mib", "requests_per_exec", "delay_mean_s",
                 "delay_p95_s", "sdk_internal_delay_mean_s", "sdk_internal_delay_p95_s",
                 "emu_cpu_peak", "background_cores", "error")  # fmt: skip
        print(json.dumps({k: result[k] for k in shown if k in result}, indent=1))
        if "error" in result:
            continue
        print(format_timeline(result))
        if profiler == "py-spy":
            samples = read_pyspy(path)
            profiles[client] = (samples, result["cpu_s"], n)
            print(summarise_pyspy(samples, result["cpu_s"], n))
            print(f"raw stacks: {path} (flamegraph.pl or speedscope read them)\n")
        else:
            stats = pstats.Stats(path)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(45)
            print(f"profile: {path} (python -m pstats, or snakeviz)\n")
    if len(profiles) > 1:
        print(compare_packages(profiles))


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", nargs="+", default=list(DEFAULT_CLIENTS), choices=ALL_CLIENTS)
    parser.add_argument("--quick", action="store_true", help="N = 200, 1 repetition")
    parser.add_argument("--interval", type=float, default=1.5, help="poll interval, everyone")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="the SDK's PollPolicy jitter (the peers have none)",
    )
    parser.add_argument(
        "--duration", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--httpx-connections", type=int, default=5, help="the bounded httpx client's pool/semaphore"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin to cores")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument(
        "--profile",
        nargs="+",
        choices=ALL_CLIENTS,
        help="instead of the benchmark, one profiled run of each client at the largest N",
    )
    parser.add_argument("--profile-out", help="the folder for the profiles (default: temp)")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="profile with cProfile (CPU time) even if py-spy is there",
    )
    parser.add_argument("--report", metavar="JSON", help="only print the report of a --json file")
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report)
        return
    if args.quick:
        args.n, args.repeat = [200], 1
        args.quiet_wait = 0.0
    ns: list[int] = args.n
    clients: list[str] = args.clients

    if args.profile:
        profile(args, args.profile, max(ns))
        return

    git_before = _git_state()
    _freeze()
    plan: list[tuple[int, int, str]] = []
    for n in ns:
        eligible = [c for c in clients if n <= SMALL_ONLY.get(c, n)]
        for rep in range(args.repeat):
            shift = rep % len(eligible) if eligible else 0
            plan += [(n, rep, c) for c in eligible[shift:] + eligible[:shift]]
    runs: list[dict[str, Any]] = []
    started = time.time()
    for index, (n, rep, client) in enumerate(plan, 1):
        if args.quiet_wait > 0:
            load = wait_for_quiet(BACKGROUND, args.quiet_wait)
            if load >= BACKGROUND:
                print(f"(the machine is busy: {load:.2f} cores in use by others; running anyway)")
        try:
            result = run_once(args, client, n)
        except Exception as exc:  # one broken run must not lose the others
            result = {"client": client, "n": n, "error": f"{type(exc).__name__}: {exc}"}
        result["repetition"] = rep
        runs.append(result)
        if "error" in result:
            line = f"ERROR {result['error']}"
        else:
            line = (
                f"wall {result['wall_s']:.2f}s  cpu/1k {result['cpu_per_1k_s']:.3f}s  "
                f"rss +{result['rss_growth_mib']:.1f}MiB  "
                f"req/exec {result['requests_per_exec']:.3f}  "
                f"delay {result['delay_mean_s']:.3f}/{result['delay_p95_s']:.3f}s  "
                f"emu {result['emu_cpu_mean']:.0%}/{result['emu_cpu_peak']:.0%}  "
                f"other {result['background_cores']:.2f}"
            )
            if result["failures"] or result["completed"] != n:
                line += f"  FAILED ITEMS {result['failures']} {result['failure_sample']}"
        print(f"[{index}/{len(plan)}] N={n} rep {rep + 1} {client:13s} {line}", flush=True)
    meta = (
        f"fanout (the package as of {git_before}, copied at the start): "
        f"N={ns}, repeat={args.repeat}, "
        f"poll interval {args.interval}s (SDK jitter {args.jitter}), "
        f"executions {args.duration[0]:g}-{args.duration[1]:g}s, seed {args.seed}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{'pinned' if args.pin else 'unpinned'}; took {time.time() - started:.0f}s. "
        "Medians of the repetitions."
    )
    if args.json:
        document = {"meta": meta, "clients": clients, "n": ns, "runs": runs}
        Path(args.json).write_text(json.dumps(document, indent=1))
    print()
    print(report(runs, clients, ns, meta))


def rerender(path: str) -> None:
    """Print the report of runs saved with ``--json``, without running anything."""
    document = json.loads(Path(path).read_text())
    if isinstance(document, list):  # an older file: the runs alone
        document = {"meta": f"(runs from {path})", "runs": document}
    runs = document["runs"]
    for run in runs:  # figures added since the file was written
        if "error" not in run and "cpu_us_per_request" not in run:
            requests = run["requests"]
            run["cpu_us_per_request"] = run["cpu_s"] / requests * 1e6 if requests else float("nan")
    clients = document.get("clients") or list(dict.fromkeys(r["client"] for r in runs))
    ns = document.get("n") or sorted({r["n"] for r in runs})
    print(report(runs, clients, ns, document["meta"]))


if __name__ == "__main__":
    main()
