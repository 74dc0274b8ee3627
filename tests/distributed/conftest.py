"""One local Ray cluster (2 CPUs, no dashboard) for every test of workflow_trigger.ray.

Starting a cluster takes seconds, so the session starts one and every test
shares it: a batch run in this process uses it (``run_many`` joins the
cluster its process is connected to), and a test's subprocess joins it by
``ray_address``. The emulator stays in the test's event loop on loopback;
the workers reach it over 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import ray

from workflow_trigger.testing import Emulator

MANY = 1_000_000


# One local cluster for every Ray test, started once: all of them are in this package, so
# it is stopped as soon as they are done and its processes do not load the rest of the run.
@pytest.fixture(scope="package")
def ray_address() -> Iterator[str]:
    context = ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


@pytest.fixture
async def emulator(anyio_backend: object, ray_address: str) -> AsyncIterator[Emulator]:
    """Runs API limits far above any test's needs (a test that wants one sets its own)."""
    del anyio_backend, ray_address
    async with Emulator(seed=0, runs_api_rate_limit=MANY, runs_api_read_rate_limit=MANY) as emu:
        yield emu
