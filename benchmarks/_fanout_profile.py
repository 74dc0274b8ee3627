"""Reading py-spy profiles of the fan-out benchmark's clients, and the emulator's timeline.

Used by ``fanout.py --profile``.
"""

from __future__ import annotations

from typing import Any


def _package(frame: str) -> str:
    """The package a py-spy frame ``func (path/file.py:line)`` belongs to."""
    where = frame[frame.rfind("(") + 1 :].rstrip(")")
    for name in ("workflow_trigger", "anyio", "aiohttp", "httpx", "httpcore", "requests",
                 "urllib3", "yarl", "multidict", "attr", "cattrs", "sniffio", "asyncio",
                 "concurrent", "threading", "json", "_fanout_worker"):  # fmt: skip
        if f"{name}/" in where or where.startswith(f"{name}.py") or f"/{name}.py" in where:
            return name
    return "other: " + where.split(":")[0]


def _function(frame: str) -> str:
    """``func (path/file.py:line)`` without the line: one entry per function."""
    head, _, where = frame.rpartition(" (")
    return f"{head} ({where.rsplit(':', 1)[0]})"


def read_pyspy(path: str) -> dict[str, Any]:
    """Samples of a py-spy ``raw`` profile, imports left out: by package of the running frame,
    by running function, and the SDK's functions inclusive of what they call."""
    from collections import Counter

    leaf_pkg: Counter[str] = Counter()
    leaf_fn: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or "importlib._bootstrap" in stack:
                continue
            count = int(count_text)
            frames = [_function(frame) for frame in stack.split(";")]
            if "_fanout_worker" in frames[0] and not any(
                frame.startswith("run_") and "_fanout_worker" in frame for frame in frames
            ):
                continue  # the worker's own set-up and report, not the client's work
            total += count
            leaf_pkg[_package(frames[-1])] += count
            leaf_fn[frames[-1]] += count
            for frame in set(frames):
                if "workflow_trigger/" in frame:
                    inclusive[frame] += count
    return {"total": total, "package": leaf_pkg, "function": leaf_fn, "sdk": inclusive}


def summarise_pyspy(samples: dict[str, Any], cpu_s: float, n: int, top: int = 25) -> str:
    total = samples["total"]
    if not total:
        return "no samples"
    per_exec = cpu_s / total / n * 1e6  # microseconds of CPU per sample, per execution

    def line(count: int, what: str) -> str:
        return f"  {100 * count / total:5.1f}%  {count * per_exec:7.1f} us/exec  {what}"

    out = [
        f"{total} CPU samples (py-spy, 200 Hz, every thread, idle and imports excluded); "
        f"{cpu_s:.2f} CPU s over {n:,} executions",
        "",
        "by package of the running frame:",
    ]
    out += [line(c, k) for k, c in samples["package"].most_common(15)]
    out += ["", "hottest functions (self):"]
    out += [line(c, k) for k, c in samples["function"].most_common(top)]
    out += ["", "SDK functions, inclusive (samples with the function on the stack):"]
    out += [line(c, k) for k, c in samples["sdk"].most_common(top)]
    return "\n".join(out)


def compare_packages(profiles: dict[str, tuple[dict[str, Any], float, int]]) -> str:
    """CPU microseconds per execution, by package, for each profiled client side by side."""
    names = list(profiles)
    packages: dict[str, None] = {}
    for samples, _, _ in profiles.values():
        packages.update(dict.fromkeys(k for k, _ in samples["package"].most_common(12)))
    rows = [f"{'us CPU per execution':32s}" + "".join(f"{name:>14s}" for name in names)]
    for package in packages:
        cells = []
        for samples, cpu_s, n in profiles.values():
            share = samples["package"].get(package, 0) / max(samples["total"], 1)
            cells.append(f"{share * cpu_s / n * 1e6:14.1f}")
        rows.append(f"{package[:32]:32s}" + "".join(cells))
    totals = "".join(f"{cpu_s / n * 1e6:14.1f}" for _, cpu_s, n in profiles.values())
    rows.append(f"{'total (getrusage)':32s}" + totals)
    return "\n".join(rows)


def format_timeline(result: dict[str, Any]) -> str:
    """Triggers and polls the emulator received, per half second of the run."""
    timeline = result.get("timeline") or {}
    if not timeline.get("start"):
        return "(no timeline)"
    lag = timeline["start"] - result["client_start"]
    out = [f"requests received per {timeline['bucket']} s (the first {lag:.2f} s after start):"]
    for i, (t, p) in enumerate(zip(timeline["trigger"], timeline["poll"], strict=True)):
        out.append(f"  {i * timeline['bucket']:5.1f}s  triggers {t:6d}  polls {p:6d}")
    return "\n".join(out)
