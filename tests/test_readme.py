"""Every Python block of the README runs, against the emulator, so the README cannot drift.

Each block runs in a fresh namespace holding ``wt`` (whose platform classes
point at the emulator: the README's placeholder keys and URLs are swapped for
the emulator's, and clients poll fast), ``attrs``, ``codika``, an open
``client`` on it and a few ``payloads``. Blocks with top-level ``await`` run on
the test's event loop; blocks using the blocking ``wt.Client`` run in a worker
thread, as they would in a script.
"""

from __future__ import annotations

import ast
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from _support import FAST

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> Iterator[tuple[int, str]]:
    text = README.read_text()
    for match in re.finditer(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE):
        yield text.count("\n", 0, match.start()) + 1, match.group(1)


BLOCKS = list(python_blocks())


def loopback(url: str | None) -> bool:
    return bool(url) and str(url).startswith("http://127.0.0.1")


def emulated(emu: Emulator) -> types.SimpleNamespace:
    """``workflow_trigger`` with its platforms pointed at ``emu`` (and fast polling)."""
    real = wt

    def codika(instance: str, api_key: str | None = None, **kw: Any) -> wt.Codika:
        if loopback(kw.get("base_url")):
            return real.Codika(instance, api_key, **kw)
        key = (
            {"org_key": emu.codika_org_key} if "org_key" in kw else {"api_key": emu.codika_api_key}
        )
        secret = {"signing_secret": emu.codika_signing_secret} if "signing_secret" in kw else {}
        auth = kw.get("auth", "header")
        return real.Codika(
            emu.codika_instance_id, base_url=emu.base_url, auth=auth, **key, **secret
        )

    def runs_api(base_url: str, api_key: str, **kw: Any) -> wt.RunsApi:
        return real.RunsApi(emu.base_url, emu.runs_api_api_key, **kw)

    def awaitstep(api_key: str, connection_id: str, **kw: Any) -> wt.AwaitStep:
        return real.AwaitStep(
            emu.awaitstep_api_key, emu.awaitstep_connection_id, base_url=emu.base_url
        )

    def function(url: str, **kw: Any) -> wt.AwaitStepFunction:
        return real.AwaitStepFunction(emu.awaitstep_function_url("score-lead"), **kw)

    def pinkfish(api_key: str, **kw: Any) -> wt.Pinkfish:
        kw["base_url"] = emu.base_url
        return real.Pinkfish(emu.pinkfish_api_key, **kw)

    def async_client(provider: wt.Provider, **kw: Any) -> wt.AsyncClient:
        kw.setdefault("poll", FAST)
        return real.AsyncClient(provider, **kw)

    def client(provider: wt.Provider, **kw: Any) -> wt.Client:
        kw.setdefault("poll", FAST)
        return real.Client(provider, **kw)

    module = types.SimpleNamespace(**{name: getattr(real, name) for name in real.__all__})
    module.Codika, module.RunsApi, module.AwaitStep = codika, runs_api, awaitstep
    module.AwaitStepFunction, module.Pinkfish = function, pinkfish
    module.AsyncClient, module.Client = async_client, client
    return module


def scenarios(emu: Emulator) -> None:
    emu.scenario("main-workflow", Scenario(duration=0.05, result=lambda p: {"echo": p}))
    emu.scenario("summarise", Scenario(result={"title": "Hello", "words": 2}))
    emu.scenario("wf_abc123", Scenario(duration=0.1, steps=("fetch", "send"), result={"ok": 1}))
    emu.scenario(
        "approval-flow", Scenario(duration=0.1, wait_for_event="approval-decision", result="ok")
    )
    emu.scenario("nightly-import", Scenario(duration=60))
    emu.scenario("score-lead", Scenario(result=lambda p: {"score": 0.9, **p}))
    emu.awaitstep.functions.add("score-lead")
    emu.scenario(
        "trigger_123",
        Scenario(duration=0.05, files={"poem.txt": "roses are red\n"}, designated="poem.txt"),
    )


async def call_the_app(app: Any) -> None:
    """Serve a block's FastAPI ``app`` under uvicorn and call its route."""
    import aiohttp
    from _uvicorn import TrackedApp, serve

    async with (
        serve(TrackedApp(app)) as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/summaries", params={"text": "hi"}) as response,
    ):
        assert response.status == 200, await response.text()
        assert await response.json() == {"title": "Hello", "words": 2}


@pytest.mark.parametrize(("line", "source"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
async def test_readme_block_runs(
    line: int,
    source: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # blocks write files (journals, downloads)
    scenarios(emulator)
    module = emulated(emulator)
    # The block's own import would replace the emulated module with the real one.
    source = source.replace("import workflow_trigger as wt\n", "")
    code = compile(source, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    codika = module.Codika("pi_123", api_key="ck_...")
    async with module.AsyncClient(codika) as client:
        namespace: dict[str, Any] = {
            "wt": module,
            "attrs": attrs,
            "codika": codika,
            "client": client,
            "payloads": [{"order_id": f"order-{i}", "text": "hi"} for i in range(5)],
        }
        with anyio.fail_after(30):
            if "wt.Client(" in source:
                await anyio.to_thread.run_sync(exec, code, namespace)
            else:
                result = eval(code, namespace)
                if result is not None:
                    await result
            if "FastAPI(" in source:
                await call_the_app(namespace["app"])
    # a block that is not about the emulator itself talked to it
    assert emulator.requests > 0 or "workflow_trigger.testing" in source
