"""Naming a batch's items (``_items.ItemKeys``): pure, no emulator."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

import workflow_trigger as wt
from workflow_trigger._items import PAYLOAD_KEY_PREFIX, ItemKeys


def names(payloads: list[Any], **options: Any) -> list[Any]:
    keys = ItemKeys(options.pop("key", None), journaled=options.pop("journaled", True))
    return [keys.name(payload, index).key for index, payload in enumerate(payloads)]


def test_a_payload_is_named_by_its_content_whatever_its_position_or_dict_order() -> None:
    payloads = [{"a": 1, "b": [1, 2]}, {"a": 2}, {"a": 3}]
    first = dict(zip(map(str, payloads), names(payloads), strict=True))
    moved = [{"a": 3}, {"b": [1, 2], "a": 1}, {"a": 4}]  # reordered, one removed, one added
    again = dict(zip(map(str, moved), names(moved), strict=True))
    assert again[str({"a": 3})] == first[str({"a": 3})]
    assert again[str({"b": [1, 2], "a": 1})] == first[str({"a": 1, "b": [1, 2]})]
    assert len(set(first.values()) | set(again.values())) == 4
    assert all(k.startswith(PAYLOAD_KEY_PREFIX) and len(k) == 8 + 32 for k in first.values())


def test_identical_payloads_are_told_apart_by_their_occurrence() -> None:
    keys = names([{"x": 1}, {"y": 1}, {"x": 1}, {"x": 1}, 1, 1.0])
    assert keys[2] == f"{keys[0]}#2" and keys[3] == f"{keys[0]}#3"
    assert len(set(keys)) == 6  # 1 and 1.0 are different JSON texts


def test_without_a_journal_or_key_the_key_is_the_position_and_nothing_is_kept() -> None:
    keys = ItemKeys(None, journaled=False)
    assert [keys.name({"same": 1}, i).key for i in range(3)] == [0, 1, 2]
    assert not keys._seen


@pytest.mark.parametrize("journaled", [True, False])
def test_a_key_seen_before_is_refused_naming_it(journaled: bool) -> None:
    keys = ItemKeys(lambda p: p["id"], journaled=journaled)
    named = [keys.name(p, i) for i, p in enumerate([{"id": "a"}, {"id": "b"}, {"id": "a"}])]
    assert [n.refused for n in named[:2]] == [None, None]
    refused = named[2].refused
    assert isinstance(refused, wt.InvalidInputError) and refused.status_code is None
    assert "'a'" in str(refused) and "duplicate" in str(refused)
    assert refused.details == {"key": "a"} and named[2].key == "a"


def test_keys_are_compared_as_json_values() -> None:
    keys = ItemKeys(lambda p: p, journaled=True)
    assert keys.name({"a": 1, "b": 2}, 0).refused is None
    assert keys.name({"b": 2, "a": 1}, 1).refused is not None  # the same JSON object
    assert keys.name(1.0, 2).refused is None  # 1.0 is not 1 on the wire
    assert keys.name(1, 3).refused is None


def test_with_a_journal_keys_must_be_json_and_without_one_hashable() -> None:
    with pytest.raises(wt.InvalidInputError, match="JSON values"):
        ItemKeys(lambda p: object(), journaled=True).name({}, 0)
    keys = ItemKeys(lambda p: p, journaled=False)
    marker = object()
    assert keys.name(marker, 0).refused is None
    assert keys.name(marker, 1).refused is not None
    unhashable = keys.name({"a": object()}, 2).refused
    assert unhashable is not None and "hashable" in str(unhashable)


def test_a_payload_the_journal_cannot_name_is_refused_alone() -> None:
    keys = ItemKeys(None, journaled=True)
    refused = keys.name({"when": object()}, 7)
    assert refused.key == 7 and refused.refused is not None
    assert "item 7" in str(refused.refused)
    assert keys.name({"ok": True}, 8).refused is None


def test_naming_keeps_a_small_digest_per_item_not_the_payloads() -> None:
    n = 20_000
    tracemalloc.start()
    try:
        keys = ItemKeys(None, journaled=True)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            keys.name({"payload": "x" * 500, "n": i}, i)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept / n < 200  # bytes per item: a 16-byte digest in a set, no payload
