"""The client-wide scheduler: every trigger and every poll of a client goes through it.

Theory of operation. ``wait``, ``run``, ``watch``, ``trigger``, ``run_many``
and ``wait_many`` all hand the scheduler a ``Job`` (one execution to trigger,
to wait on, or both) and wait for it to end: a single call awaits one event,
a batch is told through its ``Owner`` hooks. Jobs are not tasks. A pool of
workers, at most one per connection and started only as work arrives, takes
the next thing to do: a trigger (while fewer than half the workers are
triggering, so in a burst of thousands the polls that notice runs ending
never queue behind triggers), else a poll that is due. Between its polls a
job is an entry in a timer heap that one dispatcher task watches. Ten
thousand executions in flight are ten thousand small objects, whichever
method started them, not ten thousand tasks with their sleeps and scopes.

Deadlines are enforced one way: a job's deadline bounds each of its requests
through the transport (``Transport.send(deadline=)``: no try starts or waits
past it and a try in flight is cut short at it), and its timer entry is never
later than its deadline, so a job whose trigger is still queued or whose next
poll is not yet due ends on time too.

A job ends with an ``Outcome`` or with one of our errors. Anything else an
action raises (a bug, a parse the provider did not foresee) ends that job
with a ``ProtocolError``; it never stops a worker or another job. Cancelling
a job (its caller was cancelled, a batch was left early) removes it at once:
its timer entry is skipped, and the request a worker has in flight for it is
cancelled through its worker's cancel scope (one per worker, renewed after
such a cancel), so none is sent after.

What happens to one execution between its polls is ``ExecutionState``'s
business (``_state.py``, pure); this module only does the waiting and the I/O.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
import anyio
import anyio.abc
import attrs
import cattrs

from ._job import Job
from ._slots import Slots
from ._state import ExecutionState
from ._transport import (
    DeadlineReached,
    Origin,
    RateLimiter,
    Transport,
    TransportOptions,
    loop_time,
)
from .errors import ProtocolError, TransportError, WorkflowTriggerError
from .events import Event, FailureEvent, OutcomeEvent, StartEvent
from .models import Execution, Outcome, Snapshot, Status
from .options import ClientOptions
from .policies import PollPolicy, RetryPolicy
from .providers.base import Control, Provider, Request, TriggerContext

__all__ = ["Scheduler"]

logger = logging.getLogger("workflow_trigger")


#: the widest window of timer entries taken in one wake (see ``Scheduler.slack``)
COALESCE = 0.05


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def trigger_timed_out(workflow_id: str) -> TransportError:
    return TransportError(
        f"the trigger of {workflow_id!r} got no answer before the deadline, so "
        "whether a run started is unknown; raise timeout= or check the platform"
    )


def trigger_not_sent(workflow_id: str) -> TransportError:
    return TransportError(
        f"the deadline passed before the trigger of {workflow_id!r} could be sent (every "
        "connection for triggers was busy): nothing was sent; raise timeout= or lower the load"
    )


class Scheduler:
    """Owns all waiting of one client: workers, the timer heap, every deadline."""

    def __init__(
        self,
        *,
        provider: Provider,
        transport: Transport,
        policy: PollPolicy,
        retry: RetryPolicy,
        converter: cattrs.Converter,
        rng: random.Random,
        workers: int,
        emit: Callable[[Event], None] | None,
    ) -> None:
        self.provider = provider
        self.transport = transport
        self.policy = policy
        self.retry = retry
        self.converter = converter
        self.rng = rng
        self.max_workers = workers
        self.emit = emit
        self.trigger_cap = max(1, workers // 2)
        #: the window of timer entries taken in one wake of the dispatcher, not one wake
        #: each: 5 % of the poll interval, at most 50 ms. Each wake costs a process far more
        #: CPU when it sends a few requests than when it sends a burst (a half-loaded
        #: process paid 28 % more per execution with 5 ms than with 50). Entries of the
        #: policy's schedule are pushed half a window early, so their polls come within
        #: half a window of their time, as often before as after it (the number of polls
        #: and the detection delay stay what the schedule gives); a server's Retry-After
        #: is never brought forward, and a deadline is noticed at most a window late
        self.slack = min(COALESCE, policy.interval * 0.05)
        self._triggers: deque[Job] = deque()
        self._due: deque[Job] = deque()
        self._heap: list[tuple[float, Job]] = []
        self._idle: deque[anyio.Event] = deque()  # one per worker waiting for work
        self._workers = 0
        self._triggering = 0
        self._timer: anyio.Event | None = None  # wakes the dispatcher for a sooner entry
        self._sleeping_until = math.inf
        self._tasks: anyio.abc.TaskGroup | None = None

    @classmethod
    def for_client(
        cls,
        session: aiohttp.ClientSession,
        provider: Provider,
        options: ClientOptions,
        *,
        policy: PollPolicy,
        rate_limit: float | None,
        converter: cattrs.Converter,
        emit: Callable[[Event], None] | None,
    ) -> Scheduler:
        """A client's scheduler, and its transport (``transport``), from its options."""
        rng = random.Random(options.seed)
        transport = Transport(
            session,
            provider,
            TransportOptions.of(options),
            limiter=RateLimiter(rate_limit) if rate_limit else None,
            connections=Slots(options.max_connections),
            rng=rng,
            emit=emit,
        )
        return cls(
            provider=provider,
            transport=transport,
            policy=policy,
            retry=options.retry,
            converter=converter,
            rng=rng,
            workers=options.max_connections,
            emit=transport.emit,
        )

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the dispatcher (and the workers it starts) until cancelled."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            task_status.started()
            await self._dispatch()

    # -- submitting ----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Start working on ``job``: trigger it, or (with an execution) wait on it."""
        if self.emit is not None and job.tracked:
            event = StartEvent(
                provider=self.provider.kind,
                job=job.id,
                workflow_id=job.workflow_id,
                execution=job.execution,
            )
            self._report_event(job, event)
        if job.execution is not None:
            self.start_waiting(job, job.execution, None)
            return
        self._triggers.append(job)
        if math.isfinite(job.deadline):  # a queued trigger ends at its deadline too
            self._push(job, job.deadline)
        self._wake()

    def withdraw(self, job: Job, *, let_trigger_finish: bool = False) -> None:
        """Take ``job`` out (its caller is gone): ``Job.cancel``, and a ``FailureEvent``
        whose ``error`` is ``"Cancelled"`` so that whoever counts starts sees the end."""
        if job.done:
            return
        job.cancel(let_trigger_finish=let_trigger_finish)
        self._report_failure(job, "Cancelled")

    def start_waiting(self, job: Job, execution: Execution, first: Snapshot | None) -> None:
        job.execution = execution
        job.state = ExecutionState(
            execution,
            policy=self.policy,
            rng=self.rng,
            deadline=job.deadline,
            max_hint=self.retry.max_retry_after,
            first=first,
        )
        self._schedule(job)

    def _schedule(self, job: Job) -> None:
        assert job.state is not None
        self._push(job, job.state.next_poll_at(loop_time(), early=self.slack / 2))

    def _push(self, job: Job, when: float) -> None:
        job.due = when
        heapq.heappush(self._heap, (when, job))
        if when + self.slack < self._sleeping_until and self._timer is not None:
            self._timer.set()

    def _wake(self) -> None:
        if self._idle:
            self._idle.popleft().set()
        elif self._workers < self.max_workers and self._tasks is not None:
            self._workers += 1
            self._tasks.start_soon(self._worker)

    # -- the loop ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Move each job to the due queue when its timer entry comes."""
        heap, due = self._heap, self._due
        while True:
            now = loop_time() + 0.001
            while heap and heap[0][0] <= now:
                when, job = heapq.heappop(heap)
                if not job.done and when is job.due:  # its latest entry, not a stale one
                    job.due = None  # an entry of the same time is stale too
                    due.append(job)
                    self._wake()
            self._sleeping_until = heap[0][0] + self.slack if heap else math.inf
            self._timer = timer = anyio.Event()
            with anyio.CancelScope(deadline=self._sleeping_until):
                await timer.wait()

    async def _worker(self) -> None:
        while True:
            # One scope for all the steps of this worker, not one per step (a scope costs
            # about 4 us, a step a few hundred): cancelled only to cut a cancelled job's
            # step short, after which the worker goes on in a fresh one.
            with anyio.CancelScope() as scope:
                await self._work(scope)

    async def _work(self, scope: anyio.CancelScope) -> None:
        due, triggers = self._due, self._triggers
        while True:
            if triggers and self._triggering < self.trigger_cap:
                job = triggers.popleft()
                if job.done or job.state is not None:
                    continue
                self._triggering += 1
                try:
                    await self._step(job, self._trigger, scope)
                finally:
                    self._triggering -= 1
            elif due:
                job = due.popleft()
                if job.done:
                    continue
                await self._step(job, self._poll, scope)
            else:
                event = anyio.Event()
                self._idle.append(event)
                await event.wait()
                continue
            if scope.cancel_called:
                # the job cancelled itself within its step (a batch stopping before its
                # trigger): its cancel must not reach the next job's step
                return

    async def _step(
        self, job: Job, action: Callable[[Job], Awaitable[None]], scope: anyio.CancelScope
    ) -> None:
        job.scope = scope  # Job.cancel cancels it while this step runs, and only then
        try:
            await action(job)
        except WorkflowTriggerError as exc:
            await self._fail(job, exc)
        except Exception as exc:  # not ours: this job's error, never the worker's end
            error = ProtocolError(
                f"reading the answer about {job.execution or job.workflow_id!r} failed "
                f"unexpectedly ({type(exc).__name__}); the platform's answer may break "
                "its documented shape"
            )
            error.__cause__ = exc
            await self._fail(job, error)
        finally:
            job.scope = None

    # -- one step of one job -------------------------------------------------------------

    async def _trigger(self, job: Job) -> None:
        if loop_time() >= job.deadline:
            raise trigger_not_sent(job.workflow_id)
        job.started = True  # the trigger's own deadline handling applies from here on
        if job.owner is None:
            await self._send_trigger(job)
            return
        await job.owner.before_trigger(job)
        if job.cancelled:  # its owner is stopping: no trigger starts now
            return
        try:
            await self._send_trigger(job)
        finally:
            job.owner.trigger_settled(job)

    async def _send_trigger(self, job: Job) -> None:
        context = TriggerContext(
            now=now_utc(), message_id=f"msg_{os.urandom(16).hex()}", options=job.trigger_options
        )
        request = self.provider.trigger_request(job.workflow_id, job.payload, context)
        job.payload = None  # polls do not need it: let it go
        job.triggering = True
        try:
            response = await self.transport.send(
                request, deadline=_finite(job.deadline), origin=job
            )
        except DeadlineReached:
            raise trigger_timed_out(job.workflow_id) from None
        finally:
            job.triggering = False
        triggered = self.provider.parse_trigger(job.workflow_id, response, context)
        first = triggered.snapshot
        if first is not None:  # seen when the answer came, not when the request left
            first = attrs.evolve(first, observed_at=now_utc())
        job.execution = triggered.execution
        logger.debug("triggered %s: execution %s", job.workflow_id, job.execution.execution_id)
        if job.owner is not None:
            await job.owner.triggered(job)
        if job.trigger_only or job.cancelled:
            await self._end(job)
            return
        self.start_waiting(job, triggered.execution, first)
        if first is not None and job.options.reports:
            await self._changed(job, first)
        if job.state is not None and job.state.done:
            await self._finish(job)

    async def _poll(self, job: Job) -> None:
        state = job.state
        if state is None:  # the deadline of a trigger came
            if job.started:  # a worker has it: its request is bounded by the same deadline
                return
            raise trigger_not_sent(job.workflow_id)
        if state.expired(loop_time()):
            raise state.timeout_error()
        # made again for each poll, not kept: ~230 bytes less per execution in flight
        request = self.provider.status_request(state.execution)
        try:
            snapshot = await self.status(state.execution, request, state.deadline, job)
        except DeadlineReached:
            raise state.timeout_error() from None
        if state.observe(snapshot) and job.options.reports:
            await self._changed(job, snapshot)
        if state.done:
            await self._finish(job)
        else:
            self._schedule(job)

    async def _finish(self, job: Job) -> None:
        state = job.state
        assert state is not None and state.last is not None
        if job.options.snapshots_only:
            await self._end(job)
            return
        ended = state.last
        request = self.provider.result_request(state.execution, ended)
        if request is not None:
            try:
                response = await self.transport.send(
                    request, deadline=_finite(state.deadline), origin=job
                )
            except DeadlineReached:
                raise state.timeout_error() from None
            ended = self.provider.parse_result(state.execution, ended, response)
        outcome = state.outcome(ended, self.converter, job.options.result_type, **job.fields())
        self._report(job, outcome)
        await self._end(job, outcome=outcome)

    async def _fail(self, job: Job, error: WorkflowTriggerError) -> None:
        if job.options.cancel_remote and job.execution is not None and not job.cancelled:
            await self.cancel_remote(job.execution, job)
        if not job.cancelled:
            self._report_failure(job, type(error).__name__)
        await self._end(job, error=error)

    async def _end(
        self,
        job: Job,
        *,
        outcome: Outcome[Any] | None = None,
        error: WorkflowTriggerError | None = None,
    ) -> None:
        if job.cancelled:
            return  # nobody waits for it any more
        job.outcome, job.error, job.done = outcome, error, True
        if job.owner is not None:
            await job.owner.ended(job)
        else:
            job.notify()

    async def _changed(self, job: Job, snapshot: Snapshot) -> None:
        if job.owner is not None:
            await job.owner.changed(job, snapshot)
        elif job.changes is not None:
            job.changes.append(snapshot)  # the caller's own task runs its hook, in its context
            job.notify()

    def _report(self, job: Job, outcome: Outcome[Any]) -> None:
        """An execution ended: the ``OutcomeEvent`` hook and one INFO line."""
        execution = outcome.execution
        assert execution is not None
        if self.emit is not None:
            event = OutcomeEvent(
                provider=self.provider.kind,
                execution=execution,
                status=outcome.status or Status.FAILED,
                polls=outcome.polls,
                job=job.id,
                workflow_id=job.workflow_id,
                error_code=outcome.error.code if outcome.error is not None else None,
            )
            self._report_event(job, event)
        logger.info(
            "execution %s of %s ended %s after %d polls",
            execution.execution_id,
            execution.workflow_id,
            outcome.raw_status,
            outcome.polls,
        )

    def _report_failure(self, job: Job, error: str) -> None:
        """A call's job ended without an outcome: its ``FailureEvent``."""
        if self.emit is None or not job.tracked:
            return
        state = job.state
        event = FailureEvent(
            provider=self.provider.kind,
            job=job.id,
            workflow_id=job.workflow_id,
            execution=job.execution,
            error=error,
            polls=state.polls if state is not None else 0,
        )
        self._report_event(job, event)

    def _report_event(self, job: Job, event: Event) -> None:
        assert self.emit is not None
        if job.context is not None:
            job.context.run(self.emit, event)
        else:
            self.emit(event)

    # -- requests that are not steps -----------------------------------------------------

    async def status(
        self,
        execution: Execution,
        request: Request | None = None,
        deadline: float = math.inf,
        origin: Origin | None = None,
    ) -> Snapshot:
        """One poll now (``DeadlineReached`` past ``deadline``)."""
        request = request or self.provider.status_request(execution)
        response = await self.transport.send(request, deadline=_finite(deadline), origin=origin)
        snapshot = self.provider.parse_status(execution, response, now_utc())
        hint = self.retry.poll_hint(response.header("retry-after"), snapshot.retry_after)
        if hint != snapshot.retry_after and not snapshot.status.is_terminal:
            snapshot = attrs.evolve(snapshot, retry_after=hint)
        return snapshot

    async def control(
        self,
        execution: Execution,
        control: Control,
        data: Any = None,
        origin: Origin | None = None,
    ) -> None:
        request = self.provider.control_request(execution, control, data)
        response = await self.transport.send(request, origin=origin)
        self.provider.parse_control(execution, response)

    async def cancel_remote(self, execution: Execution, origin: Origin | None = None) -> None:
        """Ask the platform to cancel ``execution``, shielded and bounded, logging a failure:
        whoever asks is on its way out, and that exit must not be masked."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await self.control(execution, "cancel", origin=origin)
            except Exception as exc:
                logger.warning(
                    "could not cancel execution %s remotely: %s", execution.execution_id, exc
                )

    def cancel_remote_soon(self, execution: Execution) -> None:
        """``cancel_remote`` in the scheduler's own task group (a batch left early)."""
        if self._tasks is not None:
            self._tasks.start_soon(self.cancel_remote, execution)


def _finite(deadline: float) -> float | None:
    return deadline if math.isfinite(deadline) else None
