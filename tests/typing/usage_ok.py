"""Typed usage that must pass ``mypy --strict`` (checked by tests/test_typing.py)."""

from __future__ import annotations

import attrs

import workflow_trigger as wt
import workflow_trigger.ray as wt_ray


@attrs.frozen
class Summary:
    title: str
    words: int


async def service(codika: wt.Codika) -> None:
    async with wt.AsyncClient(codika, max_concurrency=50, poll=wt.PollPolicy(interval=1)) as client:
        outcome = await client.run("summarise", {"text": "hi"}, result_type=Summary)
        summary: Summary = outcome.unwrap()
        print(summary.words)
        async for item in client.run_many("summarise", [{}], result_type=Summary, concurrency=5):
            if item.result is not None:
                words: int = item.result.words
                print(words)
        assert outcome.execution is not None
        async with client.wait_many([outcome.execution], result_type=Summary) as batch:
            async for waited in batch:
                print(waited.unwrap().title)


def script(codika: wt.Codika) -> None:
    with wt.Client(codika, request_timeout=5.0) as client:
        outcome = client.run("summarise", result_type=Summary, timeout=30)
        print(outcome.unwrap().title)
        for item in client.run_many("summarise", [{}], result_type=Summary, fail_fast=True):
            summary: Summary | None = item.result
            print(summary)


async def untyped_results_are_any(codika: wt.Codika) -> None:
    async with wt.AsyncClient(codika) as client:
        batch = client.run_many("summarise", [{}])  # no result_type: Outcome[Any]
        async with batch:
            async for item in batch:
                print(item.unwrap()["title"])


async def over_ray(codika: wt.Codika) -> None:
    async with wt_ray.AsyncWorkers(codika, workers=2, rate_limit=5.0) as pool:
        typed = pool.run_many("summarise", [{}], result_type=Summary, concurrency=10)
        async with typed:
            async for item in typed:
                title: str = item.unwrap().title
                print(title, typed.counts.triggered)
        untyped = pool.run_many("summarise", [{}])
        async with untyped:
            async for other in untyped:
                print(other.unwrap()["title"])
    async with wt_ray.run_many_async(codika, "summarise", [{}], workers=2) as alone:
        async for one in alone:
            print(one.unwrap()["title"], one.possibly_duplicated)


def ray_script(codika: wt.Codika) -> None:
    for item in wt_ray.run_many(codika, "summarise", [{}], result_type=Summary):
        words: int = item.unwrap().words
        print(words)
    with wt_ray.Workers(codika, workers=2) as pool:
        outcomes = pool.run_many("summarise", [{}])
        for other in outcomes:
            print(other.unwrap()["title"], pool.workers)
