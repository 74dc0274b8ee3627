"""Typed usage that must pass ``mypy --strict`` (checked by tests/test_typing.py)."""

from __future__ import annotations

import attrs

import workflow_trigger as wt


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
