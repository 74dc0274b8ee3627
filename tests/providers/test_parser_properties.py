"""Property tests: whatever a platform answers, a provider's parser either returns a
value or raises one of our errors (ProtocolError for a 2xx of the wrong shape)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workflow_trigger as wt
from workflow_trigger.providers.base import Response, TriggerContext

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
CONTEXT = TriggerContext(now=NOW, message_id="msg_1")

PROVIDERS: dict[str, wt.Provider] = {
    "codika": wt.Codika("pi", api_key="ck_k", registering_grace=0),
    "runs_api": wt.RunsApi("http://localhost:3000", "wfk_k"),
    "awaitstep": wt.AwaitStep("ask_k", "conn_1"),
    "pinkfish": wt.Pinkfish("pf_k"),
    "pinkfish_sync": wt.Pinkfish("pf_k", wait="sync"),
    "awaitstep_function": wt.AwaitStepFunction("https://fn.example.com"),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
# Bodies shaped like the platforms' own, with arbitrary values where theirs are.
known_keys = st.sampled_from(
    [
        "success", "executionId", "id", "execution", "status", "resultData", "errorDetails",
        "data", "runId", "output", "error", "steps", "instanceId", "results", "resultUrls",
        "designatedOutput", "stepStatus", "stepInfo", "automationId", "message", "code",
        "details", "workflowVersion",
    ]
)  # fmt: skip
shaped = st.recursive(
    json_values,
    lambda children: st.dictionaries(known_keys, children, max_size=6),
    max_leaves=25,
)
bodies = st.one_of(
    shaped.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)
header_names = st.sampled_from(
    ["x-pf-run-id", "x-pf-automation-id", "retry-after", "x-ratelimit-remaining",
     "x-ratelimit-reset", "x-request-id", "content-type"]
)  # fmt: skip
headers = st.dictionaries(header_names, st.text(max_size=30), max_size=4)


def execution_of(provider: wt.Provider) -> wt.Execution:
    return wt.Execution(
        provider=provider.kind,
        workflow_id="wf",
        execution_id="run_1",
        extras={"automation_id": "auto_1", "instance_id": "inst_1", "process_instance_id": "pi"},
        triggered_at=NOW - timedelta(minutes=5),
    )


def says_error(body: bytes) -> bool:
    """A 2xx whose envelope itself reports an error (``success: false``, an error object)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and (
        data.get("success") is False or isinstance(data.get("error"), (dict, str))
    )


def check(call: Any, status: int, body: bytes) -> None:
    try:
        call()
    except wt.ProtocolError:
        pass
    except wt.APIError:
        assert not 200 <= status < 300 or says_error(body), (
            "a 2xx answer must parse, or be a ProtocolError unless its envelope reports an error"
        )


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    status=st.sampled_from([200, 201, 202, 400, 401, 404, 412, 422, 429, 500, 503]),
    body=bodies,
    hdrs=headers,
)
def test_parsers_only_return_or_raise_our_errors(
    name: str, status: int, body: bytes, hdrs: dict[str, str]
) -> None:
    provider = PROVIDERS[name]
    response = Response(status=status, headers=hdrs, body=body)
    check(lambda: provider.parse_trigger("wf", response, CONTEXT), status, body)
    if name == "awaitstep_function":
        return
    execution = execution_of(provider)
    check(lambda: provider.parse_status(execution, response, NOW), status, body)
    snapshot = wt.Snapshot(status=wt.Status.SUCCEEDED, raw_status="done", observed_at=NOW)
    check(lambda: provider.parse_result(execution, snapshot, response), status, body)
    with contextlib.suppress(wt.ProtocolError, wt.APIError, wt.UnsupportedOperation):
        provider.parse_control(execution, response)
