"""What a running emulator accepts, per platform, with a ready-to-run curl line each."""

from __future__ import annotations

import json
import shlex

from ._awaitstep import AwaitStepConfig
from ._codika import CodikaConfig
from ._pinkfish import PinkfishConfig
from ._runs_api import RunsApiConfig

__all__ = ["describe"]

EXAMPLE_WORKFLOW = "main-workflow"


def _curl(url: str, headers: dict[str, str], body: object, *, include: bool = False) -> str:
    parts = ["curl", "-i" if include else "-s", "-X", "POST", shlex.quote(url)]
    for name, value in {**headers, "Content-Type": "application/json"}.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    parts += ["-d", shlex.quote(json.dumps(body))]
    return " ".join(parts)


def describe(
    base_url: str,
    codika: CodikaConfig,
    runs: RunsApiConfig,
    awaitstep: AwaitStepConfig,
    pinkfish: PinkfishConfig,
) -> str:
    """Several lines: each platform's credentials and ids, a trigger curl line, the poll path."""
    base, workflow = base_url, EXAMPLE_WORKFLOW
    automation = pinkfish.automation_id(workflow)
    lines = [
        "Codika: process instance "
        f"{codika.instance_id}; X-API-Key {codika.api_key} (or ?api_key=); "
        f"X-Process-Manager-Key {codika.org_key}; signing secret {codika.signing_secret}",
        "  "
        + _curl(
            f"{base}/webhook/{codika.instance_id}/{workflow}",
            {"X-API-Key": codika.api_key},
            {"payload": {}},
        ),
        f"  poll: GET {base}/status/{codika.instance_id}/{{executionId}}",
        f"Runs API: x-api-key {runs.api_key} (read-only key: {runs.read_only_key})",
        "  "
        + _curl(
            f"{base}/api/v1/workflows/{workflow}/run",
            {"x-api-key": runs.api_key},
            {"input": {}},
        ),
        f"  poll: GET {base}/api/v1/runs/{{runId}}",
        f"AwaitStep: Authorization: Bearer {awaitstep.api_key} (read-only key: "
        f"{awaitstep.read_only_key}); connectionId {awaitstep.connection_id}",
        "  "
        + _curl(
            f"{base}/api/workflows/{workflow}/trigger",
            {"Authorization": f"Bearer {awaitstep.api_key}"},
            {"connectionId": awaitstep.connection_id, "params": {}},
        ),
        f"  poll: GET {base}/api/workflows/{workflow}/runs/{{id}}; "
        f"functions: POST {base}/fn/{{name}}",
        f"Pinkfish: X-API-KEY {pinkfish.api_key} (or POST "
        f"{base}/ext/webhook/{pinkfish.api_key}/triggers/{{triggerId}}); "
        f"trigger {workflow} runs automation {automation}",
        "  "
        + _curl(
            f"{base}/ext/triggers/{workflow}",
            {"X-API-KEY": pinkfish.api_key, "x-api-wait": "false"},
            {},
            include=True,
        ),
        f"  poll: GET {base}/ext/webhook/{pinkfish.api_key}/runs/{automation}/{{X-Pf-Run-Id}}"
        "/status (and /results)",
    ]
    return "\n".join(lines)
