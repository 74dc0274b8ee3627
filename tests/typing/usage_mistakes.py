"""Mistakes ``mypy --strict`` must catch (tests/test_typing.py asserts each line's error)."""

from __future__ import annotations

import attrs

import workflow_trigger as wt


@attrs.frozen
class Summary:
    words: int


async def service(codika: wt.Codika) -> None:
    async with wt.AsyncClient(codika, max_concurency=5) as client:  # E: option typo
        outcome = await client.run("wf", result_type=Summary)
        text: str = outcome.unwrap()  # E: wrong result type
        async for item in client.run_many("wf", [{}], concurrncy=5):  # E: run_many typo
            print(item)
        async for done in client.run_many("wf", [{}], result_type=Summary):
            name: str = done.unwrap()  # E: wrong batch result type
            print(name, text)


def script(codika: wt.Codika) -> None:
    with wt.Client(codika, rate_limt=3) as client:  # E: facade option typo
        client.run("wf", timout=3)  # E: run typo
        for item in client.run_many("wf", [{}], concurrncy=5):  # E: facade run_many typo
            print(item)
        client.wait_many([], timout=3)  # E: facade wait_many typo
