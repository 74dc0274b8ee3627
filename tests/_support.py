"""Shared test helpers (conftest.py holds only fixtures)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

import workflow_trigger as wt
from workflow_trigger.testing import Emulator

#: short, jitter-free intervals keep the suite fast and its request counts exact
FAST = wt.PollPolicy(interval=0.02, jitter=0.0, timeout=10.0)
FAST_RETRY = wt.RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)


def codika_for(emu: Emulator, **kwargs: Any) -> wt.Codika:
    options: dict[str, Any] = {"base_url": emu.base_url}
    if "org_key" not in kwargs:
        options["api_key"] = emu.codika_api_key
    options.update(kwargs)
    return wt.Codika(emu.codika_instance_id, **options)


_SCRIPT = shutil.which("workflow-trigger", path=str(Path(sys.executable).parent))
#: the command line as a user runs it (the installed script, else the module)
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "workflow_trigger.cli"]


@asynccontextmanager
async def emulator_process(*args: str) -> AsyncIterator[str]:
    """``workflow-trigger emulator --port 0 ARGS`` in a subprocess; yields its base URL
    (the first line it prints) and stops it afterwards."""
    command = [*COMMAND, "emulator", "--port", "0", *args]
    async with await anyio.open_process(command) as process:
        try:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(20):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive()
            yield line.decode().splitlines()[0].strip()
        finally:
            process.terminate()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int]) -> None:
    """Until none of ``pids`` runs (they are not our children: no wait() for them)."""
    while any(map(alive, pids)):
        time.sleep(0.05)


async def polls_stopped(emu: Emulator, interval: float) -> bool:
    """Whether ``emu`` receives no poll over ten poll intervals (what was polling stopped)."""
    polls = emu.poll_requests
    await anyio.sleep(10 * interval)
    return emu.poll_requests == polls


async def workers_stopped(emu: Emulator, pids: list[int], interval: float) -> bool:
    """Once the processes ``pids`` are gone: whether no poll comes over ten poll intervals."""
    await anyio.to_thread.run_sync(wait_gone, pids)
    return await polls_stopped(emu, interval)
