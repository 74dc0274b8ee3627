"""AsyncClient.run_many against the emulator."""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
from _support import FAST

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Fault, Scenario


async def test_every_index_exactly_once_within_the_concurrency(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.01, 0.06), result=lambda p: p))
    payloads = [{"i": i} for i in range(200)]
    outcomes = [o async for o in client.run_many("wf", payloads, concurrency=10)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(200))
    assert all(o.ok and o.result == {"i": o.index} and o.key == o.index for o in outcomes)
    assert emulator.triggers("wf") == 200
    assert emulator.max_in_flight <= 10


async def test_a_thousand_executions_at_concurrency_fifty(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.0, 0.03), result=lambda p: p["i"]))
    async with make_client() as client:
        payloads = ({"i": i} for i in range(1000))
        outcomes = [o async for o in client.run_many("wf", payloads, concurrency=50)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(1000))
    assert all(o.ok and o.result == o.index for o in outcomes)
    assert emulator.triggers("wf") == 1000
    assert emulator.max_in_flight <= 50


async def test_payloads_are_pulled_lazily(client: wt.AsyncClient, emulator: Emulator) -> None:
    emulator.scenario("wf", Scenario(duration=0.01, result=1))
    pulled = 0

    def endless() -> Iterator[dict[str, int]]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield {"i": i}

    received = 0
    async with client.run_many("wf", endless(), concurrency=5) as batch:
        async for _ in batch:
            received += 1
            if received == 20:
                break
    assert pulled <= 20 + 2 * 5 + 1


async def test_async_iterables_and_key_functions(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    async def payloads():  # type: ignore[no-untyped-def]
        for name in ["a", "b", "c"]:
            yield {"name": name}

    keys = {o.key async for o in client.run_many("wf", payloads(), key=lambda p: p["name"])}
    assert keys == {"a", "b", "c"}


async def test_breaking_out_cancels_every_in_flight_wait(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    async for _ in client.run_many("wf", [{}] * 100, concurrency=8, timeout=None):
        # from now on every trigger starts a run that does not end: only
        # cancellation can stop their pollers
        emulator.scenario("wf", Scenario(duration=60))
        break
    assert emulator.triggers("wf") < 100
    # A poll already on the wire at the break may still land; loopback delivers
    # it well within one interval. After that, a leaked poller would poll again.
    await anyio.sleep(FAST.interval)
    polls = emulator.poll_requests
    await anyio.sleep(FAST.interval * 5)  # a window in which a leaked poller would poll again
    assert emulator.poll_requests == polls


async def test_aclose_and_the_callers_scope_stop_a_batch(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    batch = client.run_many("slow", [{}] * 20, concurrency=8, timeout=None)

    async def consume() -> None:
        async for _ in batch:
            pass  # pragma: no cover - nothing ends

    async with anyio.create_task_group() as tg:  # the caller's scope, cancelled mid-batch
        tg.start_soon(consume)
        with anyio.fail_after(10):
            await emulator.wait_until(lambda: emulator.triggers("slow") == 8)
            await emulator.wait_until(lambda: emulator.poll_requests > 0)
        tg.cancel_scope.cancel()
    await batch.aclose()
    assert emulator.triggers("slow") == 8
    polls = emulator.poll_requests
    assert polls > 0
    await anyio.sleep(FAST.interval * 5)
    assert emulator.poll_requests == polls


async def test_an_item_that_fails_locally_does_not_end_the_batch(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    payloads = [{"ok": 1}, {"bad": float("nan")}, {"ok": 2}]
    outcomes = {o.index: o async for o in client.run_many("wf", payloads)}
    assert outcomes[0].ok and outcomes[2].ok
    bad = outcomes[1]
    assert isinstance(bad.exception, wt.InvalidInputError)
    assert bad.execution is None and bad.status is None and not bad.ok


async def test_a_timed_out_item_carries_its_execution(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    [outcome] = [o async for o in client.run_many("slow", [{}], timeout=0.1)]
    assert isinstance(outcome.exception, wt.PollTimeout)
    assert outcome.execution is not None and outcome.status is wt.Status.PENDING


async def test_fail_fast_stops_at_the_first_local_failure(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    payloads = [{"bad": float("nan")}] + [{}] * 10
    with pytest.raises(wt.InvalidInputError):
        async for _ in client.run_many("slow", payloads, concurrency=2, fail_fast=True):
            pass


async def test_an_exception_in_the_consumer_cancels_the_batch(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    emulator.scenario("slow", Scenario(duration=60))
    with pytest.raises(KeyError):
        async for _ in client.run_many("wf", [{}] * 50, concurrency=5):
            raise KeyError("consumer bug")
    await anyio.sleep(FAST.interval)  # a trigger already on the wire may still land
    triggered = emulator.trigger_requests
    await anyio.sleep(FAST.interval * 5)
    assert emulator.trigger_requests == triggered < 50


async def test_a_failing_payload_iterator_surfaces_to_the_consumer(
    client: wt.AsyncClient,
) -> None:
    def broken() -> Iterator[dict[str, int]]:
        yield {}
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        async for _ in client.run_many("wf", broken()):
            pass


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"concurrency": 0}, "concurrency"), ({"timeout": -1}, "timeout"), ({"key": 3}, "key")],
)
async def test_bad_batch_arguments_are_refused(
    client: wt.AsyncClient, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(wt.InvalidInputError, match=match):
        client.run_many("wf", [{}], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(wt.InvalidInputError, match="iterable"):
        client.run_many("wf", "not a list of payloads")


async def test_run_many_needs_the_client_context(
    make_client: Callable[..., wt.AsyncClient],
) -> None:
    client = make_client()
    with pytest.raises(wt.UnsupportedOperation, match="async with"):
        client.run_many("wf", [{}])


# -- the engine: items are not tasks, each request is bounded by its item's deadline ------


async def test_a_batch_runs_on_a_pool_of_workers_not_a_task_per_item(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(1.0, 1.5), result=lambda p: p["i"]))
    most_tasks = 0
    async with make_client(max_connections=8) as client:
        payloads = [{"i": i} for i in range(300)]
        async for outcome in client.run_many("wf", payloads, concurrency=300):
            assert outcome.ok and outcome.result == outcome.index
            sdk_tasks = [
                task
                for task in anyio.get_running_tasks()
                if task.name.startswith(("workflow_trigger.", "run_many"))
            ]
            most_tasks = max(most_tasks, len(sdk_tasks))
    # 300 runs went on at once, on 8 workers, the dispatcher and the driver
    assert emulator.max_in_flight > 100
    assert 8 < most_tasks <= 8 + 2


async def test_a_hanging_poll_ends_at_the_items_deadline(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    emulator.add_fault(Fault.slow(count=100, delay=30, on="poll"))
    with anyio.fail_after(5):  # not after the 30 s hang, nor the 30 s request timeout
        [outcome] = [o async for o in client.run_many("slow", [{}], timeout=0.3)]
    assert isinstance(outcome.exception, wt.PollTimeout)
    assert outcome.execution is not None


async def test_a_retry_that_cannot_start_before_the_deadline_is_not_waited_for(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    emulator.add_fault(Fault.server_error(count=100, on="poll"))
    retry = wt.RetryPolicy(attempts=5, backoff=30, max_backoff=30)
    async with make_client(retry=retry, seed=1) as client:
        with anyio.fail_after(5):
            [outcome] = [o async for o in client.run_many("slow", [{}], timeout=0.5)]
    assert isinstance(outcome.exception, wt.PollTimeout)


async def test_a_trigger_unanswered_at_the_deadline_says_a_run_may_have_started(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.add_fault(Fault.slow(count=1, delay=30, on="trigger"))
    with anyio.fail_after(5):
        [outcome] = [o async for o in client.run_many("wf", [{}], timeout=0.3)]
    assert isinstance(outcome.exception, wt.TransportError)
    assert "no answer before the deadline" in str(outcome.exception)
    assert outcome.execution is None


async def test_leaving_a_batch_early_gives_back_the_clients_slots(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    emulator.scenario("slow", Scenario(duration=60))
    async with make_client(max_concurrency=4) as client:
        with anyio.move_on_after(0.3):
            async for _ in client.run_many("slow", [{}] * 10, concurrency=4, timeout=None):
                pass  # pragma: no cover - nothing ends
        assert emulator.triggers("slow") == 4
        # Every slot the batch held is free again: four runs fit at once.
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                for _ in range(4):
                    tasks.start_soon(client.run, "wf", {})
        assert emulator.triggers("wf") == 4


class _Payload(dict):  # type: ignore[type-arg]
    """A payload a test can hold a weak reference to (a plain dict cannot be)."""


async def test_a_payload_is_let_go_once_its_trigger_is_sent(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    refs: list[weakref.ref[_Payload]] = []

    def payloads() -> Iterator[_Payload]:
        for i in range(10):
            payload = _Payload(i=i, blob="x" * 100_000)
            refs.append(weakref.ref(payload))
            yield payload

    def all_polled() -> bool:
        runs = emulator.executions
        return len(runs) == 10 and all(emulator.polls(run.id) >= 1 for run in runs)

    async with anyio.create_task_group() as tasks:
        batch = client.run_many("slow", payloads(), concurrency=10, timeout=None)
        tasks.start_soon(batch.__anext__)
        with anyio.fail_after(5):
            # each item's first poll comes after its trigger was answered
            await emulator.wait_until(all_polled)
        gc.collect()
        # every run is still going on, and not one payload is held any more
        assert len(refs) == 10 and all(ref() is None for ref in refs)
        tasks.cancel_scope.cancel()
    await batch.aclose()


# -- wait_many: the same engine, waiting on executions triggered elsewhere --------------


async def test_wait_many_resumes_executions_from_their_tokens(
    make_client: Callable[..., wt.AsyncClient], emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=(0.05, 0.3), result=lambda p: p["i"]))
    async with make_client() as first:
        tokens = [(await first.trigger("wf", {"i": i})).token() for i in range(120)]
    # another process, another client: only the tokens crossed over
    async with make_client(max_concurrency=20) as client:
        executions = (wt.Execution.from_token(token) for token in tokens)
        outcomes = [o async for o in client.wait_many(executions, concurrency=20)]
    assert sorted(o.index for o in outcomes if o.index is not None) == list(range(120))
    for outcome in outcomes:
        assert outcome.ok and outcome.execution is not None
        assert outcome.key == outcome.index and outcome.result == outcome.index
        assert outcome.execution.token() == tokens[outcome.index]
    assert emulator.triggers("wf") == 120  # nothing was triggered again


async def test_wait_many_reports_a_bad_entry_and_goes_on(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    good = await client.trigger("wf", {})
    foreign = wt.Execution(
        provider="pinkfish", workflow_id="t", execution_id="r", triggered_at=good.triggered_at
    )
    entries = [good, "wt1.not-an-execution", foreign, good]
    outcomes = {o.index: o async for o in client.wait_many(entries)}  # type: ignore[arg-type]
    assert outcomes[0].ok and outcomes[3].ok
    for index, match in ((1, "expected an Execution"), (2, "pinkfish")):
        bad = outcomes[index]
        assert isinstance(bad.exception, wt.InvalidInputError)
        assert bad.exception.args[0].count(match) == 1 and bad.execution is None


async def test_wait_many_gives_up_on_each_item_at_its_deadline(
    client: wt.AsyncClient, emulator: Emulator
) -> None:
    emulator.scenario("slow", Scenario(duration=60))
    emulator.scenario("wf", Scenario(duration=0.0, result=1))
    executions = [await client.trigger("slow", {}), await client.trigger("wf", {})]
    with anyio.fail_after(5):
        outcomes = {o.index: o async for o in client.wait_many(executions, timeout=0.3)}
    assert isinstance(outcomes[0].exception, wt.PollTimeout)
    assert outcomes[0].execution == executions[0]
    assert outcomes[1].ok


async def test_wait_many_needs_the_client_context(
    make_client: Callable[..., wt.AsyncClient],
) -> None:
    with pytest.raises(wt.UnsupportedOperation, match="async with"):
        make_client().wait_many([])
