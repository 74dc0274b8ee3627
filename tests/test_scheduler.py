"""The client-wide scheduler: one engine under every wait, every option on every path."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import textwrap
import threading
import weakref
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _support import codika_for

import workflow_trigger as wt
from workflow_trigger.providers.base import Response
from workflow_trigger.testing import Emulator, Fault, Scenario

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def awaitstep_for(emu: Emulator) -> wt.AwaitStep:
    return wt.AwaitStep(emu.awaitstep_api_key, emu.awaitstep_connection_id, base_url=emu.base_url)


async def test_concurrent_runs_share_a_bounded_pool_of_workers(
    make_client: Any, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.05, 0.2), result={"ok": True}))
    tasks_seen = 0
    async with make_client(max_connections=8) as client:

        async def one() -> wt.Outcome[Any]:
            nonlocal tasks_seen
            outcome = await client.run("wf")
            sdk = [t for t in asyncio.all_tasks() if "Scheduler" in t.get_name()]
            tasks_seen = max(tasks_seen, len(sdk))
            return outcome

        outcomes: list[wt.Outcome[Any]] = []

        async def collect() -> None:
            outcomes.append(await one())

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(collect)
    assert len(outcomes) == 300 and all(o.ok for o in outcomes)
    assert emulator.triggers("wf") == 300
    # at most one worker per connection and the scheduler's own: no task per execution
    assert 1 < tasks_seen <= 8 + 1


async def test_a_cancelled_wait_sends_nothing_after_the_cancel(
    make_client: Any, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    retry = wt.RetryPolicy(attempts=10, backoff=0.3, max_backoff=0.3)
    async with make_client(retry=retry) as client:
        ex = await client.trigger("slow")
        emulator.add_fault(Fault.server_error(count=100, status=503, on="poll"))
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.wait, ex)
                with anyio.fail_after(5):
                    await emulator.wait_for_polls(ex.execution_id, 1)
                scope.cancel()  # the worker is now in the transport's backoff before a retry
        polls = emulator.polls(ex.execution_id)
        await anyio.sleep(0.6)  # two backoffs: a retry not cancelled would have gone out
        assert emulator.polls(ex.execution_id) == polls


async def test_hooks_run_in_the_callers_context(make_client: Any, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    seen: list[tuple[str, str]] = []

    def on_event(event: wt.Event) -> None:
        seen.append((type(event).__name__, REQUEST_ID.get()))

    def on_snapshot(snapshot: wt.Snapshot) -> None:
        seen.append(("snapshot", REQUEST_ID.get()))

    async with make_client(on_event=on_event) as client:

        async def handler(request_id: str) -> None:
            REQUEST_ID.set(request_id)
            await client.run("wf", on_snapshot=on_snapshot)

        async with anyio.create_task_group() as tg:
            tg.start_soon(handler, "req-1")
            tg.start_soon(handler, "req-2")
        by_request = {rid for _, rid in seen}
        assert by_request == {"req-1", "req-2"}
        assert {kind for kind, _ in seen} >= {"RequestEvent", "OutcomeEvent", "snapshot"}

        seen.clear()
        REQUEST_ID.set("batch-7")
        async with client.run_many("wf", [{}, {}, {}], on_snapshot=on_snapshot) as batch:
            outcomes = [o async for o in batch]
    assert all(o.ok for o in outcomes)
    assert seen and {rid for _, rid in seen} == {"batch-7"}


async def test_an_async_on_snapshot_is_awaited(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    statuses: list[wt.Status] = []

    async def on_snapshot(snapshot: wt.Snapshot) -> None:
        await anyio.lowlevel.checkpoint()
        statuses.append(snapshot.status)

    outcome = await client.run("wf", on_snapshot=on_snapshot)
    assert outcome.ok and statuses[-1] is wt.Status.SUCCEEDED
    statuses.clear()
    async with client.run_many("wf", [{}, {}], on_snapshot=on_snapshot) as batch:
        assert all([o.ok async for o in batch])
    assert statuses.count(wt.Status.SUCCEEDED) == 2


class _Fragile(wt.Codika):
    """A provider whose parser breaks, not with one of our errors, on one kind of answer."""

    def parse_status(self, execution: wt.Execution, response: Response, now: datetime) -> Any:
        if b"boom" in response.body:
            raise KeyError("resultData")
        return super().parse_status(execution, response, now)


async def test_an_unexpected_error_ends_its_item_only(make_client: Any, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result=lambda payload: payload))
    provider = _Fragile(
        emulator.codika_instance_id, api_key=emulator.codika_api_key, base_url=emulator.base_url
    )
    payloads = [{"boom": True} if i % 5 == 0 else {"i": i} for i in range(20)]
    async with make_client(provider) as client:
        outcomes = [o async for o in client.run_many("wf", payloads)]
        with pytest.raises(wt.ProtocolError, match="unexpectedly") as info:
            await client.run("wf", {"boom": True})
    assert isinstance(info.value.__cause__, KeyError)
    assert sorted(o.index for o in outcomes) == list(range(20))
    broken = sorted(o.index for o in outcomes if isinstance(o.exception, wt.ProtocolError))
    assert broken == [0, 5, 10, 15]
    assert all(o.ok for o in outcomes if o.index not in broken)


async def test_run_many_cancels_remote_runs_when_left_early(
    make_client: Any, emulator: Emulator
) -> None:
    emulator.scenario("long", Scenario(duration=60))
    async with make_client(awaitstep_for(emulator)) as client:
        batch = client.run_many("long", [{}] * 4, cancel_remote_on_exit=True)
        async with batch:
            task = asyncio.ensure_future(batch.__anext__())
            with anyio.fail_after(5):
                await emulator.wait_until(lambda: emulator.operation_requests("poll") >= 4)
            task.cancel()
        with anyio.fail_after(5):
            await emulator.wait_until(lambda: emulator.operation_requests("control") >= 4)
    assert emulator.operation_requests("control") == 4


async def test_a_run_many_deadline_cancels_remote_runs(
    make_client: Any, emulator: Emulator
) -> None:
    emulator.scenario("long", Scenario(duration=60))
    async with make_client(awaitstep_for(emulator)) as client:
        outcomes = [
            o
            async for o in client.run_many(
                "long", [{}] * 3, timeout=0.2, cancel_remote_on_exit=True
            )
        ]
    assert all(isinstance(o.exception, wt.PollTimeout) for o in outcomes)
    assert emulator.operation_requests("control") == 3


async def test_cancel_remote_on_exit_is_refused_where_there_is_no_remote_cancel(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    with pytest.raises(wt.UnsupportedOperation, match="cancel_remote_on_exit"):
        await client.run("wf", cancel_remote_on_exit=True)
    with pytest.raises(wt.UnsupportedOperation, match="cancel_remote_on_exit"):
        client.run_many("wf", [{}], cancel_remote_on_exit=True)
    assert emulator.requests == 0


async def test_trigger_and_status_take_a_timeout(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    ex = await client.trigger("slow")
    emulator.add_fault(Fault.slow(count=1, delay=30, on="poll"))
    with anyio.fail_after(5), pytest.raises(wt.PollTimeout, match="status"):
        await client.status(ex, timeout=0.2)
    emulator.add_fault(Fault.slow(count=1, delay=30, on="trigger"))
    with anyio.fail_after(5), pytest.raises(wt.TransportError, match="deadline"):
        await client.trigger("slow", timeout=0.2)


async def test_a_function_refuses_trigger_and_points_to_run(
    make_client: Any, emulator: Emulator
) -> None:
    fn = wt.AwaitStepFunction(f"{emulator.base_url}/fn/score-lead")
    async with make_client(fn) as client:
        with pytest.raises(wt.UnsupportedOperation, match=r"client\.run"):
            await client.trigger("score-lead", {})
    assert emulator.requests == 0


async def test_a_client_that_is_not_open_says_how_to_open_it(emulator: Emulator) -> None:
    client = wt.AsyncClient(codika_for(emulator))
    with pytest.raises(wt.UnsupportedOperation, match="async with"):
        await client.run("wf")
    assert emulator.requests == 0


async def test_an_unclosed_client_does_not_hang_the_interpreter(emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"n": 1}))
    script = textwrap.dedent(
        f"""
        import workflow_trigger as wt
        codika = wt.Codika({emulator.codika_instance_id!r}, api_key={emulator.codika_api_key!r},
                           base_url={emulator.base_url!r})
        client = wt.Client(codika, poll=wt.PollPolicy(interval=0.02, jitter=0))
        print(client.run("wf").result)
        """
    )
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-W", "always::ResourceWarning", "-c", script], check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "{'n': 1}"
    assert "ResourceWarning: a workflow_trigger.Client was never closed" in done.stderr.decode()


def test_a_collected_client_is_closed_with_a_resource_warning() -> None:
    def loops() -> int:
        return sum(t.name == "workflow_trigger.Client" for t in threading.enumerate())

    before = loops()
    client = wt.Client(wt.Codika("pi", api_key="ck", base_url="http://127.0.0.1:9"))
    assert loops() == before + 1
    with pytest.warns(ResourceWarning, match="never closed"):
        del client
        gc.collect()
    assert loops() == before  # the loop's thread was stopped and joined


async def test_every_event_of_one_execution_carries_its_job(
    make_client: Any, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.05, result={"ok": True}))
    emulator.scenario("slow", Scenario(duration=60))
    events: list[wt.Event] = []
    async with make_client(on_event=events.append, rate_limit=10) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(client.run, "wf")
        with anyio.move_on_after(0.3):
            await client.run("slow")
    starts = [e for e in events if isinstance(e, wt.StartEvent)]
    assert len(starts) == 4
    for start in starts:
        mine = [e for e in events if getattr(e, "job", None) == start.job]
        assert mine[0] is start
        assert any(isinstance(e, wt.RequestEvent) for e in mine)
        end = mine[-1]
        if start.workflow_id == "wf":
            assert isinstance(end, wt.OutcomeEvent) and end.status is wt.Status.SUCCEEDED
        else:  # the caller gave up: its job ends with a cancel, nothing follows
            assert isinstance(end, wt.FailureEvent) and end.error == "Cancelled"
    waits = [e for e in events if isinstance(e, wt.RateLimitEvent)]
    assert waits and all(e.delay > 0 and e.job is not None for e in waits)


async def test_a_trigger_on_the_wire_at_its_deadline_is_unknown_not_unsent(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.slow(count=1, delay=30, on="trigger"))
    with anyio.fail_after(5), pytest.raises(wt.TransportError, match="got no answer"):
        await client.run("wf", timeout=0.2)
    assert emulator.trigger_requests == 1


async def test_a_trigger_queued_past_its_deadline_is_never_sent(
    make_client: Any, emulator: Emulator
) -> None:
    # one connection, so one trigger at a time: the second waits in the queue past its deadline
    emulator.add_fault(Fault.slow(count=1, delay=1.0, on="trigger"))
    async with make_client(max_connections=1) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.trigger, "wf")
        await emulator.wait_until(lambda: emulator.trigger_requests == 1)
        with anyio.fail_after(5), pytest.raises(wt.TransportError, match="nothing was sent"):
            await client.run("wf", timeout=0.2)
    assert emulator.trigger_requests == 1


class _Payload(dict):  # type: ignore[type-arg]
    """A payload a test can hold a weak reference to (a plain dict cannot be)."""


async def test_a_waiting_run_lets_its_payload_go_once_triggered(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    # ten thousand services' calls in flight must not each hold their payload for the
    # whole run: once the trigger is sent, only the caller may still hold it
    emulator.scenario("slow", Scenario(duration=60))
    refs = []
    async with anyio.create_task_group() as tasks:
        for i in range(5):
            payload = _Payload(i=i, blob="x" * 100_000)
            refs.append(weakref.ref(payload))
            tasks.start_soon(client.run, "slow", payload)
        del payload
        with anyio.fail_after(5):
            await emulator.wait_until(
                lambda: (
                    len(emulator.executions) == 5
                    and all(emulator.polls(run.id) >= 1 for run in emulator.executions)
                )
            )
        gc.collect()
        assert [ref() for ref in refs] == [None] * 5  # every run is still being waited on
        tasks.cancel_scope.cancel()


async def test_run_wait_and_trigger_check_their_arguments_when_called(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    # refused at the call, before any coroutine exists to forget to await
    with pytest.raises(wt.InvalidInputError, match="on_snapshot must be a function"):
        client.run("wf", on_snapshot=42)  # type: ignore[arg-type]
    with pytest.raises(wt.InvalidInputError, match="expected an Execution"):
        client.wait("not an execution")  # type: ignore[arg-type]
    with pytest.raises(wt.InvalidInputError, match="timeout"):
        client.trigger("wf", timeout=-1)
    # and nothing is sent until the coroutine is awaited
    pending = client.run("wf")
    await anyio.lowlevel.checkpoint()
    assert emulator.trigger_requests == 0
    outcome = await pending
    assert outcome.ok and emulator.trigger_requests == 1


async def test_a_runs_timeout_counts_from_when_it_is_awaited(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.2, result=1))
    pending = client.run("wf", timeout=0.5)
    await anyio.sleep(0.6)  # longer than the timeout, before the run even starts
    outcome = await pending
    assert outcome.ok and outcome.result == 1


class _WithdrawsItself:
    """An owner that takes its job out just before the trigger, as a stopping batch does."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    async def before_trigger(self, job: Any) -> None:
        self.scheduler.withdraw(job)

    async def triggered(self, job: Any) -> None:  # pragma: no cover - never triggered
        raise AssertionError("withdrawn before its trigger")

    def trigger_settled(self, job: Any) -> None:
        pass

    async def changed(self, job: Any, snapshot: Any) -> None:  # pragma: no cover
        pass

    async def ended(self, job: Any) -> None:  # pragma: no cover
        pass


async def test_a_job_withdrawn_within_its_own_step_leaves_the_workers_next_step_alone(
    make_client: Any, emulator: Emulator
) -> None:
    from workflow_trigger._job import Job, JobOptions

    emulator.scenario("wf", Scenario(duration=0.05, result=1))
    # one connection, so one worker: it takes the withdrawn job, then the run's steps
    async with make_client(max_connections=1) as client:
        scheduler = client._scheduler
        job = Job(JobOptions(), workflow_id="wf", payload={}, owner=_WithdrawsItself(scheduler))
        scheduler.submit(job)
        with anyio.fail_after(5):
            outcome = await client.run("wf")
    assert job.cancelled and outcome.ok and outcome.result == 1
    assert emulator.triggers("wf") == 1  # the withdrawn job sent nothing


async def test_a_forgotten_await_names_the_method(client: wt.AsyncClient) -> None:
    with pytest.warns(RuntimeWarning, match="'AsyncClient.run' was never awaited"):
        client.run("wf")
        gc.collect()
    with pytest.warns(RuntimeWarning, match="'AsyncClient.trigger' was never awaited"):
        client.trigger("wf")
        gc.collect()


async def test_timer_entries_due_close_together_fire_in_one_wake_and_never_early() -> None:
    import random

    from workflow_trigger._job import Job, JobOptions
    from workflow_trigger._results import make_converter
    from workflow_trigger._scheduler import Scheduler
    from workflow_trigger._transport import loop_time

    scheduler = Scheduler(
        provider=wt.Codika("pi_1", api_key="ck_1"),
        transport=None,  # type: ignore[arg-type]  # the dispatcher sends nothing
        policy=wt.PollPolicy(interval=1.0),  # so entries may wait 50 ms for each other
        retry=wt.RetryPolicy(),
        converter=make_converter(),
        rng=random.Random(0),
        workers=1,
        emit=None,
    )
    fired: list[float] = []
    all_fired = anyio.Event()

    def woken() -> None:  # the dispatcher moved one job to the due queue
        fired.append(loop_time())
        if len(fired) == 5:
            all_fired.set()

    scheduler._wake = woken  # type: ignore[method-assign]
    start = loop_time()
    due = [start + 0.05 + i * 0.001 for i in range(5)]  # five entries within 4 ms
    for when in due:
        scheduler._push(Job(JobOptions(), workflow_id="wf"), when)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(scheduler._dispatch)
        with anyio.fail_after(5):
            await all_fired.wait()
        tasks.cancel_scope.cancel()
    assert all(at >= when for at, when in zip(fired, due, strict=True))  # none early
    assert max(fired) - min(fired) < 0.002  # one wake took them all


async def test_polls_of_the_schedule_are_centred_on_their_time_and_hints_never_early() -> None:
    import random
    from datetime import datetime, timezone

    from workflow_trigger._job import Job, JobOptions
    from workflow_trigger._results import make_converter
    from workflow_trigger._scheduler import Scheduler
    from workflow_trigger._transport import loop_time

    scheduler = Scheduler(
        provider=wt.Codika("pi_1", api_key="ck_1"),
        transport=None,  # type: ignore[arg-type]  # nothing is sent
        policy=wt.PollPolicy(interval=1.0, jitter=0.0),
        retry=wt.RetryPolicy(),
        converter=make_converter(),
        rng=random.Random(0),
        workers=1,
        emit=None,
    )
    assert scheduler.slack == 0.05  # 5 % of the interval, at most 50 ms
    at = datetime(2026, 12, 2, tzinfo=timezone.utc)
    execution = wt.Execution(provider="codika", workflow_id="wf", execution_id="e", triggered_at=at)
    job = Job(JobOptions(), workflow_id="wf")
    before = loop_time()
    scheduler.start_waiting(job, execution, None)
    assert job.due is not None
    # the dispatcher takes it within one window after this: from 25 ms early to 25 ms late
    assert before + 1.0 - 0.025 <= job.due <= loop_time() + 1.0 - 0.025
    hinted = wt.Snapshot(
        status=wt.Status.RUNNING, raw_status="running", observed_at=at, retry_after=3.0
    )
    job = Job(JobOptions(), workflow_id="wf")
    before = loop_time()
    scheduler.start_waiting(job, execution, hinted)
    assert job.due is not None and before + 3.0 <= job.due <= loop_time() + 3.0  # never early
