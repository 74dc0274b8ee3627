"""Naming the items of a batch, refusing a key seen twice, counting what became of them. Pure.

How it works. ``ItemKeys`` is given the payloads in input order and names
each one (``ItemKeys.name``):

* with ``key=``, the item's key is ``key(payload)``. A key an earlier item of
  the batch already had is refused: that item gets an ``InvalidInputError``
  naming the key and is never triggered, so ten lines with one key start one
  run, not ten.
* without ``key=`` but with a journal, the key is a digest of the payload's
  canonical JSON (sorted keys, no spaces), numbered by the payload's
  occurrence among identical payloads: ``"payload:<32 hex digits>"`` for the
  first, ``"payload:<32 hex digits>#2"`` for the second copy, and so on. Where
  a line sits in the input plays no part, so reordering, adding or removing
  lines never hands one item another's outcome.
* without either, the key is the item's position, as before; nothing is kept.

What it costs. A batch with ``key=`` or a journal keeps one 16-byte digest
per item in a set: about 150 bytes per item with Python's object and set
overheads, some 150 MB for a million items, plus a count for each payload
seen more than once. Payloads and keys themselves are never kept, except, without a journal,
a key that is not a JSON value (it is then kept as itself, hashable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Hashable, Iterable
from typing import Any

import attrs

from .errors import InvalidInputError

__all__ = [
    "PAYLOAD_KEY_PREFIX",
    "BatchCounts",
    "ItemKey",
    "ItemKeys",
    "canonical_json",
    "iterate",
]

#: how a key made from a payload's digest starts
PAYLOAD_KEY_PREFIX = "payload:"


async def iterate(payloads: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    """A batch's input, sync or async, read one item at a time."""
    if isinstance(payloads, AsyncIterable):
        async for payload in payloads:
            yield payload
    else:
        for payload in payloads:
            yield payload


def canonical_json(value: Any) -> str:
    """One text per JSON value, whatever its dicts' order: what keys and digests are made of.

    Raises ``TypeError`` or ``ValueError`` for a value that is not JSON.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


@attrs.frozen
class ItemKey:
    """What one item is called: ``key`` (what ``Outcome.key`` shows and the journal
    records), or ``refused``, the error to end the item with instead of triggering it."""

    key: Any
    refused: InvalidInputError | None = None


class ItemKeys:
    """Names a batch's items, in input order (see the module's docstring)."""

    __slots__ = ("_journaled", "_key", "_repeats", "_seen")

    def __init__(self, key: Callable[[Any], Any] | None, *, journaled: bool) -> None:
        self._key = key
        self._journaled = journaled
        self._seen: set[Hashable] = set()
        self._repeats: dict[bytes, int] = {}  # payload digest -> copies seen, once past one

    def name(self, payload: Any, index: int) -> ItemKey:
        """The key of the item at ``index`` (its position in the input).

        Raises ``InvalidInputError`` when, with a journal, ``key(payload)`` is not a
        JSON value: that is a mistake of the whole batch, not of one item.
        """
        if self._key is not None:
            return self._named(self._key(payload))
        if not self._journaled:
            return ItemKey(index)
        try:
            text = canonical_json(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            return ItemKey(
                index,
                InvalidInputError(
                    f"item {index}: the payload is not JSON ({exc}), so the journal cannot "
                    "name it; fix the payload, or pass key= a function that names each item"
                ),
            )
        digest = _digest(text)
        key = PAYLOAD_KEY_PREFIX + digest.hex()
        if digest not in self._seen:
            self._seen.add(digest)
            return ItemKey(key)
        copy = self._repeats.get(digest, 1) + 1
        self._repeats[digest] = copy
        return ItemKey(f"{key}#{copy}")

    def _named(self, key: Any) -> ItemKey:
        seen: Hashable
        try:
            seen = _digest(canonical_json(key))
        except (TypeError, ValueError, RecursionError) as exc:
            if self._journaled:
                raise InvalidInputError(
                    f"with a journal, item keys must be JSON values (str, int...), got "
                    f"{key!r}: pass key= a function that returns one"
                ) from exc
            seen = ("object", key)  # never equal to a digest
            try:
                hash(seen)
            except TypeError:
                return ItemKey(key, _refused(key, "is neither a JSON value nor hashable"))
        if seen in self._seen:
            return ItemKey(key, _refused(key, "is a duplicate: an earlier item had it"))
        self._seen.add(seen)
        return ItemKey(key)


def _refused(key: Any, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"the key {key!r} {why}; this item was not triggered. Give each item a key of "
        "its own (key= names items: two items with one key would share one journal "
        "entry and one outcome)",
        details={"key": key},
    )


@attrs.define
class BatchCounts:
    """What became of a batch's items so far (``Batch.counts``).

    ``from_journal``: answered from the journal, no request; ``resumed``: waited
    on from a token the journal had, not triggered again; ``triggered``:
    triggers sent (of which ``flagged`` were re-sent after an interruption
    where no idempotency key protects them, their outcomes
    ``possibly_duplicated``); ``refused``: never triggered (a duplicate key, a
    payload the journal cannot name).
    """

    from_journal: int = 0
    resumed: int = 0
    triggered: int = 0
    flagged: int = 0
    refused: int = 0
