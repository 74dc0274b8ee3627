"""The body decoders (``_bodies``) on their own: br is used only where the installed
brotli can bound its output, and then each step makes about a piece, whatever the input."""

from __future__ import annotations

import sys
import types

import brotli
import pytest

from workflow_trigger import _bodies

MiB = 1024 * 1024


def test_brotli_is_used_when_it_can_bound_its_output() -> None:
    assert _bodies._bounded_brotli() is brotli  # the test extra installs brotli >= 1.2
    assert _bodies.ACCEPT_ENCODING == "gzip, deflate, br"


def test_brotli_missing_or_too_old_to_bound_its_output_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "brotli", None)  # not installed: its import fails
    assert _bodies._bounded_brotli() is None
    old = types.ModuleType("brotli")  # before 1.2: no output limit, no can_accept_more_data

    class Decompressor:
        def process(self, data: bytes) -> bytes:
            return data

    old.Decompressor = Decompressor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "brotli", old)
    assert _bodies._bounded_brotli() is None


@pytest.mark.parametrize("step", [7, 64 * 1024, None], ids=["7 B", "64 KiB", "all at once"])
def test_a_br_bomb_decodes_in_bounded_pieces_to_the_last_byte(step: int | None) -> None:
    data = b" " * (128 * MiB)
    bomb = brotli.compress(data, quality=5)
    assert len(bomb) < 1_000
    decoder = _bodies.decoder_for("br")
    size = step or len(bomb)
    total, largest = 0, 0
    for start in range(0, len(bomb), size):
        for piece in decoder.feed(bomb[start : start + size]):
            total, largest = total + len(piece), max(largest, len(piece))
    assert list(decoder.end()) == []
    assert total == len(data)
    assert largest <= 2 * _bodies.PIECE  # about a piece: brotli overshoots by a block


def test_a_br_decoder_stuck_without_output_or_room_is_refused_not_spun() -> None:
    class Stuck:  # no output, no room for input, not finished: a loop would never end
        def process(self, data: bytes, output_buffer_limit: int) -> bytes:
            return b""

        def can_accept_more_data(self) -> bool:
            return False

        def is_finished(self) -> bool:
            return False

    decoder = _bodies.decoder_for("br")
    decoder._inflater = Stuck()  # type: ignore[attr-defined]
    with pytest.raises(_bodies.UndecodableBody, match="no progress"):
        list(decoder.feed(b"\x0b"))
