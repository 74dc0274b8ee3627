"""``address=``: what Ray could not join is refused before anything starts, an unreachable
cluster is said to be one at once (``ray.init`` would retry it for minutes, then exit the
process), and a Ray Client address (``ray://``) runs the batch through the cluster's Ray
Client server, which the ``ray`` extra installs what it needs for."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import anyio
import pytest
from test_cli import cli, codika_env, write_payloads

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
from workflow_trigger.testing import Emulator, Scenario

PROVIDER = wt.Codika("pi_test", api_key="ck_secret_do_not_print")


@pytest.mark.parametrize(
    "address", ["", "no such thing", "head", "http://head:6379", "ray://head", "head:port", 6379]
)
def test_an_address_ray_could_not_join_is_refused_before_anything_starts(address: object) -> None:
    with pytest.raises(wt.InvalidInputError, match=r"address must be None .*'ray://host:port'"):
        wt_ray.run_many_async(PROVIDER, "wf", [], address=address)  # type: ignore[arg-type]
    with pytest.raises(wt.InvalidInputError, match="address must be"):
        wt_ray.Workers(PROVIDER, address=address)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    ["auto", "10.0.0.1:6379", "head-1.example.com:6379", "[::1]:6379", "ray://head:10001"],
)
def test_every_form_ray_joins_is_accepted(address: str) -> None:
    wt_ray.AsyncWorkers(PROVIDER, address=address)  # checked, not started


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_cluster_is_an_error_at_once_that_says_what_to_check(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05))
    address = f"127.0.0.1:{free_port()}"
    inputs = tmp_path / "in.jsonl"
    write_payloads(inputs, 3)
    args = ("batch", "codika", "wf", "--input", str(inputs), "--output", str(tmp_path / "out"))
    args += ("--ray-address", address)
    with anyio.fail_after(60):  # ray.init alone would retry for minutes
        code, _, err = await cli(*args, env=codika_env(emulator))
    assert code == 3, err
    assert f"could not reach the Ray cluster at '{address}'" in err
    assert "--ray-address" in err and "Traceback" not in err
    assert emulator.codika_api_key not in err
    assert emulator.triggers("wf") == 0


RAY_CLIENT_BATCH = """
import sys
import workflow_trigger as wt
import workflow_trigger.ray as wt_ray
address, base_url, key = sys.argv[1:4]
provider = wt.Codika("pi_test", api_key=key, base_url=base_url)
poll = wt.PollPolicy(interval=0.05, jitter=0.0)
outcomes = list(wt_ray.run_many(
    provider, "wf", ({"n": i} for i in range(20)), workers=2, address=address, poll=poll
))
print(sorted(o.result["n"] for o in outcomes if o.ok))
"""


async def test_a_batch_runs_through_the_cluster_s_ray_client_server(
    emulator: Emulator, ray_address: str, tmp_path: Path
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.05, 0.2), result=lambda p: p))
    port = free_port()
    command = [sys.executable, "-m", "ray.util.client.server", f"--address={ray_address}"]
    # legacy: the server serves in its own process, not one more process spawned per client
    server = await anyio.open_process([*command, f"--port={port}", "--mode=legacy"])
    try:
        with anyio.fail_after(120):
            while True:  # the server is up once its port accepts
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await anyio.sleep(0.2)
            script = tmp_path / "batch.py"
            script.write_text(RAY_CLIENT_BATCH)
            argv = [f"ray://127.0.0.1:{port}", emulator.base_url, emulator.codika_api_key]
            result = await anyio.run_process([sys.executable, str(script), *argv], check=False)
    finally:
        server.terminate()
        await server.wait()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert out.strip().splitlines()[-1] == str(list(range(20)))
    assert emulator.triggers("wf") == 20
