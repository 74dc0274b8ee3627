"""An emulator of the workflow platforms, for testing code that talks to them.

:class:`Emulator` is a real ``aiohttp.web`` server on a loopback port that
speaks each platform's public protocol (today: Codika, under ``/webhook/...``
and ``/status/...``), so a client under test needs nothing but a base URL::

    from workflow_trigger.testing import Emulator, Fault, Scenario

    async with Emulator(seed=0) as emu:
        emu.scenario("main-workflow", Scenario(duration=0.05, result={"x": 1}))
        emu.add_fault(Fault.server_error(count=2, status=503, on="poll"))
        ...  # point the client at emu.base_url with emu.codika_api_key
        assert emu.triggers("main-workflow") == 1

How a run behaves is a :class:`Scenario` per workflow id; its status follows
from the clock alone (pending until ``duration`` has passed, then the
scenario's status). A :class:`Fault` makes the next matching requests fail
(5xx, 429, malformed body, delay, dropped connection) before any other check.

Counters, for exact assertions (``reset_counters()`` zeroes them):

* ``requests``, ``trigger_requests``, ``poll_requests``: requests received,
  whatever the answer (faulted, refused and unknown routes included);
* ``triggers(workflow_id)``: trigger requests that *started* an execution;
* ``polls(execution_id)``: status requests received for that id;
* ``in_flight`` / ``max_in_flight``: executions started by a trigger whose
  terminal status no status response has shown yet, now / at the peak. A run
  counts as in flight until the client has *seen* it finish, which is what a
  client's concurrency limit controls; a run never polled stays in flight;
* ``request_log``: a :class:`RequestRecord` per request (headers, body, answer);
* ``executions``: an :class:`Execution` per started run.

``wait_for_polls`` / ``wait_for_triggers`` / ``wait_for_requests`` /
``wait_until`` wait on events, not sleeps; bound them with ``anyio.fail_after``.

The pytest fixture ``emulator`` is in :mod:`workflow_trigger.testing.fixtures`;
``python -m workflow_trigger.testing`` runs one standalone.
"""

from ._core import EmulatorCore, ErrorRenderer, RouteSet
from ._emulator import Emulator, serve
from ._model import OUTCOMES, Execution, Fault, RequestRecord, Scenario
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
