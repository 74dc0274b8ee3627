"""AsyncClient.run_many against the emulator."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import anyio
import pytest
from _support import FAST

import workflow_trigger as wt
from workflow_trigger.testing import Emulator, Scenario


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
    with anyio.move_on_after(0.2):
        async for _ in batch:
            pass  # pragma: no cover - nothing ends
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
