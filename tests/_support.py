"""Shared test helpers (conftest.py holds only fixtures)."""

from __future__ import annotations

from typing import Any

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
