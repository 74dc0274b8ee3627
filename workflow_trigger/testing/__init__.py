"""An emulator of the workflow platforms, for testing code that talks to them.

:class:`Emulator` is a real ``aiohttp.web`` server on a loopback port that
speaks each platform's public protocol, all on one server, so a client under
test needs nothing but a base URL::

    from workflow_trigger.testing import Emulator, Fault, Scenario

    async with Emulator(seed=0) as emu:
        emu.scenario("main-workflow", Scenario(duration=0.05, result={"x": 1}))
        emu.add_fault(Fault.server_error(count=2, status=503, on="poll"))
        ...  # point the client at emu.base_url with emu.codika_api_key
        assert emu.triggers("main-workflow") == 1

Platforms and their routes (keys, ids and answer forms are constructor
arguments prefixed with the platform's name, readable as attributes of the
same name; the defaults are shown):

* **Codika** (``codika_api_key="ck_test_key"``, ``codika_instance_id``, ...):
  ``POST /webhook/{instance}/{workflow}``, ``GET /status/{instance}/{id}``.
* **Runs API** (``runs_api_api_key="wfk_test_key"``, read-only
  ``runs_api_read_only_key="wfk_read_only"``): ``POST
  /api/v1/workflows/{id}/run``, ``GET /api/v1/runs/{runId}``. The same
  ``idempotencyKey`` within ``runs_api_idempotency_ttl`` (24 h) returns the
  existing run (``idempotent_replays`` counts these). ``runs_api_workflow_status
  ["wf"] = "draft"`` refuses runs (``INVALID_STATUS``); a scenario's
  ``required_inputs`` gives ``VALIDATION_ERROR``; ``runs_api_rate_limit`` (per
  minute, default off; ``runs_api_read_rate_limit`` for reads) enforces a
  sliding window, and only then do the answers carry its ``X-RateLimit-*``
  headers. Switches: ``runs_api_details_form="field"``
  (``{"field", "message"}`` details), ``runs_api_error_success=False`` (no
  ``"success": false``), ``runs_api_rate_limit_reset="seconds"``.
* **AwaitStep** (``awaitstep_api_key="ask_test_key"``, read-only
  ``awaitstep_read_only_key="ask_read_only"``,
  ``awaitstep_connection_id="conn_test"``): ``POST
  /api/workflows/{id}/trigger`` answers 201 with the run record;
  ``GET /api/workflows/{id}/runs/{runId}``; ``POST .../runs/{runId}/pause``,
  ``/resume``, ``/terminate``. A trigger whose params carry ``instanceId`` and
  ``eventType`` delivers an event (``Execution.events``).
  ``awaitstep_undeployed`` and ``awaitstep_functions`` declare workflows with
  no version and functions; a function runs on ``POST /fn/{name}``
  (``emu.awaitstep_function_url(name)``). Switches:
  ``awaitstep_trigger_reply="instance"`` (the documented ``{"instanceId"}``
  answer; runs are then found by instance id too),
  ``awaitstep_json_strings=False`` (``output`` / ``error`` as JSON values, not
  JSON-encoded strings).
* **Pinkfish** (``pinkfish_api_key="pf_test_key"``): ``POST
  /ext/triggers/{id}`` or ``POST /ext/webhook/{key}/triggers/{id}``, with
  ``x-api-wait: true`` held up to ``pinkfish_sync_limit`` seconds (60);
  ``GET /ext/webhook/{key}/runs/{automationId}/{runId}/status`` and
  ``/results``; result files are served at ``GET /files/{token}/{name}``.
  ``emu.pinkfish_automation_id(trigger_id)`` is the automation behind a
  trigger (``pinkfish_automation_ids`` overrides it).

How a run behaves is a :class:`Scenario` per workflow id, whichever platform
triggers it. Its state follows from a run clock alone: pending for ``queued``
seconds (default a tenth of ``duration``), running until ``duration``, then
the scenario's ``status`` (``OUTCOMES``: success, failed, error, timeout).
``steps`` complete at equal fractions of the duration; ``wait_for_event``
stops a run halfway until that event comes; ``files`` / ``designated`` are
Pinkfish result files. ``Execution.advance(seconds)`` moves a run forward at
once, and ``pause()`` / ``resume()`` / ``terminate()`` act on it out of band
(a terminated run is ``cancelled`` on the Runs API, which has no cancel
endpoint), so tests need not sleep. A :class:`Fault` makes the next matching
requests fail (5xx, 429, malformed body, delay, dropped connection) before any
other check, in the platform's own error format; ``platform=`` restricts it to
``"codika"``, ``"runs_api"``, ``"awaitstep"`` or ``"pinkfish"``.

Counters, for exact assertions (``reset_counters()`` zeroes them):

* ``requests``, ``trigger_requests``, ``poll_requests``: requests received,
  whatever the answer (faulted, refused and unknown routes included);
  ``operation_requests(op)`` for any operation, including ``"result"``
  (Pinkfish results), ``"control"`` (AwaitStep pause / resume / terminate) and
  ``"download"`` (result files), which are neither triggers nor polls;
* ``triggers(workflow_id)``: trigger requests that *started* an execution
  (an idempotent replay or an event delivery starts none);
* ``polls(execution_id)``: status requests received for that id;
* ``in_flight`` / ``max_in_flight``: executions started by a trigger whose
  terminal status no response has shown yet, now / at the peak. A run
  counts as in flight until the client has *seen* it finish, which is what a
  client's concurrency limit controls; a run never polled stays in flight;
* ``request_log``: a :class:`RequestRecord` per request (headers, body, answer);
* ``executions``: an :class:`Execution` per started run.

``wait_for_polls`` / ``wait_for_triggers`` / ``wait_for_requests`` /
``wait_until`` wait on events, not sleeps; bound them with ``anyio.fail_after``.

The pytest fixture ``emulator`` is in :mod:`workflow_trigger.testing.fixtures`;
``python -m workflow_trigger.testing`` runs one standalone and prints, for
every platform, the keys it accepts and a curl line (``emu.describe()``).
"""

from ._core import EmulatorCore, ErrorRenderer, RouteSet
from ._emulator import Emulator, serve
from ._execution import Execution
from ._model import OUTCOMES, Fault, Scenario
from ._records import RequestRecord
from ._webhooks import WebhookSignatureError, sign_webhook, verify_webhook, webhook_headers

__all__ = [
    "OUTCOMES",
    "Emulator",
    "EmulatorCore",
    "ErrorRenderer",
    "Execution",
    "Fault",
    "RequestRecord",
    "RouteSet",
    "Scenario",
    "WebhookSignatureError",
    "serve",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
]
