"""The emulator's data: scenarios, faults, execution records and request records.

Nothing here knows a platform. A :class:`Scenario` says how a workflow behaves
(how long a run takes and how it ends), a :class:`Fault` says how the next
matching request misbehaves, and the records are what the emulator saw and
did, for tests to assert on.

The run state machine is driven by time alone, so no background task is
needed: an execution is *registering* for ``register_delay`` seconds after its
trigger (status requests answer 404), *pending* (queued) for ``queued`` seconds
of run time, *running* until ``duration`` seconds of run time have passed, then
*finished* with the scenario's ``status``. Run time (:class:`~._clock.RunClock`)
stands still while a run is paused or waits for an event; a terminated run
stops for good. :attr:`Execution.state` is the neutral state each platform maps
to its own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "OPERATIONS",
    "OUTCOMES",
    "Fault",
    "FaultKind",
    "Operation",
    "Scenario",
]

#: How a run may end, in the emulator's neutral vocabulary. Each platform's
#: routes map these to its own words: Codika uses them as they are, except
#: ``"timeout"`` (a run that exceeded its time limit: Pinkfish's TIMEOUT),
#: which Codika reports as ``"failed"``.
OUTCOMES = ("success", "failed", "error", "timeout")

#: What a request does. ``result`` fetches a finished run's results (Pinkfish),
#: ``control`` pauses, resumes or terminates a run (AwaitStep), ``download``
#: fetches a result file; none of them is a trigger or a poll.
Operation = Literal["trigger", "poll", "result", "control", "download", "any"]
OPERATIONS: tuple[Operation, ...] = ("trigger", "poll", "result", "control", "download", "any")
FaultKind = Literal["server_error", "rate_limited", "malformed", "slow", "drop"]


def _check_duration(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, tuple):
        low, high = value
        if not 0 <= low <= high:
            raise ValueError(f"{attribute.name} range must satisfy 0 <= low <= high")
    elif not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0 or a (low, high) tuple")


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of names, not a single string")
    return tuple(str(name) for name in value)


def _files(value: Mapping[str, bytes | str]) -> Mapping[str, bytes]:
    return {
        name: data.encode() if isinstance(data, str) else bytes(data)
        for name, data in value.items()
    }


@attrs.frozen
class Scenario:
    """How one workflow behaves when triggered.

    ``duration`` is seconds from trigger to a terminal status; a ``(low, high)``
    tuple draws uniformly from the emulator's seeded RNG at trigger time.
    ``result`` is the JSON result of a successful run, or a callable that takes
    the trigger payload and returns it. ``error`` is the platform's error object
    for failed runs. For ``register_delay`` seconds after the trigger the status
    endpoint answers 404, as the real service does while a run registers.
    ``id_field`` names the key carrying the run id in the Codika trigger
    response (``None``: the response has no id at all, to test protocol errors).

    The other fields matter to the platforms that report them:

    * ``steps``: step ids (Runs API ``steps[].id``, Pinkfish step names); step
      *k* of *n* completes at *k/n* of the duration, and a failed run fails on
      its last step. Pinkfish reports one ``"Step 1"`` when this is empty.
    * ``queued``: seconds of run time the run stays pending / queued / PENDING
      before running (within ``duration``); ``None``: a tenth of the duration.
    * ``wait_for_event``: an event type (AwaitStep): the run stops at half its
      duration, ``waiting``, until an event of that type is delivered.
    * ``required_inputs``: input fields the workflow's schema requires (Runs API
      answers ``VALIDATION_ERROR`` when one is missing).
    * ``files`` and ``designated``: result files of the last step (name ->
      bytes or text) and the name of the designated output (Pinkfish).
    """

    duration: float | tuple[float, float] = attrs.field(default=0.0, validator=_check_duration)
    status: str = attrs.field(default="success", validator=attrs.validators.in_(OUTCOMES))
    result: Any = None
    error: Mapping[str, Any] | None = None
    register_delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    id_field: str | None = "executionId"
    steps: tuple[str, ...] = attrs.field(default=(), converter=_names)
    queued: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    wait_for_event: str | None = None
    required_inputs: tuple[str, ...] = attrs.field(default=(), converter=_names)
    files: Mapping[str, bytes] = attrs.field(factory=dict, converter=_files)
    designated: str | None = None

    def resolve_result(self, payload: Any) -> Any:
        """The result data for a run started with ``payload``."""
        return self.result(payload) if callable(self.result) else self.result


@attrs.frozen
class Fault:
    """A misbehaviour for the next ``count`` matching requests.

    ``on`` restricts it to one operation (``"trigger"``, ``"poll"``,
    ``"result"``, ``"control"``, ``"download"``) or any; ``workflow`` to one
    workflow id; ``platform`` to one platform's routes (``"codika"``,
    ``"runs_api"``, ``"awaitstep"``, ``"pinkfish"``; ``None``: all). Faults are
    consumed first-added first; one request takes at most one fault. They apply
    before authentication, like a proxy or load balancer in front of the
    service would, and error bodies are the platform's own. Build them with the
    class methods.
    """

    kind: FaultKind
    count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    on: Operation = attrs.field(default="any", validator=attrs.validators.in_(OPERATIONS))
    workflow: str | None = None
    platform: str | None = None
    status: int = 500
    retry_after: float | None = None
    retry_after_date: bool = False
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))

    @classmethod
    def server_error(
        cls,
        count: int = 1,
        status: int = 500,
        on: Operation = "any",
        workflow: str | None = None,
        *,
        platform: str | None = None,
    ) -> Fault:
        """Answer ``status`` (5xx) with the platform's error body."""
        if not 500 <= status <= 599:
            raise ValueError("server_error status must be 5xx")
        return cls("server_error", count, on, workflow, platform, status=status)

    @classmethod
    def rate_limited(
        cls,
        count: int = 1,
        retry_after: float | None = 1.0,
        on: Operation = "any",
        workflow: str | None = None,
        *,
        retry_after_date: bool = False,
        platform: str | None = None,
    ) -> Fault:
        """Answer 429 with ``Retry-After`` in seconds (``None``: no header).

        With ``retry_after_date`` the header is an HTTP date instead, rounded up
        to the next whole second (HTTP dates have one-second resolution).
        """
        return cls(
            "rate_limited",
            count,
            on,
            workflow,
            platform,
            status=429,
            retry_after=retry_after,
            retry_after_date=retry_after_date,
        )

    @classmethod
    def malformed(
        cls,
        count: int = 1,
        on: Operation = "any",
        workflow: str | None = None,
        *,
        platform: str | None = None,
    ) -> Fault:
        """Answer 200 with a truncated body that is not JSON (content type says it is)."""
        return cls("malformed", count, on, workflow, platform, status=200)

    @classmethod
    def slow(
        cls,
        count: int = 1,
        delay: float = 1.0,
        on: Operation = "any",
        workflow: str | None = None,
        *,
        platform: str | None = None,
    ) -> Fault:
        """Wait ``delay`` seconds, then answer normally."""
        return cls("slow", count, on, workflow, platform, delay=delay)

    @classmethod
    def drop(
        cls,
        count: int = 1,
        on: Operation = "any",
        workflow: str | None = None,
        *,
        platform: str | None = None,
    ) -> Fault:
        """Read the request, then close the connection without answering."""
        return cls("drop", count, on, workflow, platform)

    def matches(self, platform: str, operation: Operation, workflow: str | None) -> bool:
        return (
            self.on in ("any", operation)
            and (self.workflow is None or self.workflow == workflow)
            and (self.platform is None or self.platform == platform)
        )
