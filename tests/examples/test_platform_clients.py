"""The platforms' own documented client programs, run to completion against
``workflow-trigger emulator --scenarios examples/platform_clients.json``.

The programs in ``examples/platform_clients/`` are the documents' JavaScript,
bash + curl + jq and Python ``requests`` examples, changed only to read the
base URL, keys and ids from the environment. The emulator runs as the command
a user would start, in a subprocess on a free port.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from _support import emulator_process

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "examples" / "platform_clients"
SCENARIOS = ROOT / "examples" / "platform_clients.json"


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """The base URL of a ``workflow-trigger emulator`` serving the examples' scenarios."""
    args = ["--scenarios", str(SCENARIOS)]
    args += ["--awaitstep-trigger-reply", "instance"]  # the document's {"instanceId"} answer
    async with emulator_process(*args) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url


def client_env(base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CODIKA_BASE_URL": base_url,
        "CODIKA_API_KEY": "ck_test_key",
        "CODIKA_PROCESS_INSTANCE_ID": "pi_test",
        "RUNS_API_BASE_URL": base_url,
        "RUNS_API_KEY": "wfk_test_key",
        "RUNS_API_WORKFLOW_ID": "wf_customer_sync",
        "AWAITSTEP_BASE_URL": base_url,
        "AWAITSTEP_API_KEY": "ask_test_key",
        "AWAITSTEP_CONNECTION_ID": "conn_test",
        "PINKFISH_BASE_URL": base_url,
        "PINKFISH_API_KEY": "pf_test_key",
        "PINKFISH_TRIGGER_ID": "trigger_poem",
    }


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


PROGRAMS = [
    pytest.param(
        [sys.executable, "pinkfish.py"],
        ["'status': 'COMPLETE'", "retrieved-poem.txt"],
        id="pinkfish.py",
    ),
    pytest.param([sys.executable, "runs_api.py"], ["Run ID: run_"], id="runs_api.py"),
    pytest.param(
        ["bash", "pinkfish.sh"],
        ["Workflow completed!", '"designatedOutput"', "Roses are red,\nworkflows are done."],
        id="pinkfish.sh",
        marks=needs("bash", "curl", "jq"),
    ),
    pytest.param(
        ["node", "codika.mjs"], ["Sent to 1 recipients"], id="codika.mjs", marks=needs("node")
    ),
    pytest.param(
        ["node", "runs_api.mjs"],
        ["Run ID: run_", 'Output: {"invoiceId":"inv_123"}'],
        id="runs_api.mjs",
        marks=needs("node"),
    ),
    pytest.param(
        ["node", "awaitstep.mjs"],
        ["Run started: ", 'Run complete: {"orderId": "ord_001", "charged": true}'],
        id="awaitstep.mjs",
        marks=needs("node"),
    ),
    pytest.param(
        ["node", "pinkfish.mjs"],
        ["status: 'COMPLETE'", "retrieved-poem.txt"],
        id="pinkfish.mjs",
        marks=needs("node"),
    ),
]


@pytest.mark.parametrize(("command", "expected"), PROGRAMS)
async def test_a_documented_client_program_runs_to_completion(
    base_url: str, command: list[str], expected: list[str]
) -> None:
    with anyio.fail_after(60):
        done = await anyio.run_process(command, cwd=CLIENTS, env=client_env(base_url), check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, (out, err)
    for text in expected:
        assert text in out, out
