"""Reading a response body under a cap, content decoding included.

aiohttp is asked not to decompress (``auto_decompress=False`` on every request,
whatever the session says): this module decodes ``Content-Encoding`` itself,
in pieces of at most ``PIECE`` bytes however much one network chunk inflates,
and the transport counts the *decoded* bytes against ``max_body``. A
compression bomb (130 KB of gzip inflating to 128 MiB) therefore ends in
``ProtocolError`` having held no more than about the cap in memory, on every
aiohttp version and with a caller's own session.

Only the encodings decoded here are advertised in ``Accept-Encoding``: gzip
and deflate (zlib, which honours an output limit), and br where the installed
``brotli`` can bound its output too. Anything else is refused.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["ACCEPT_ENCODING", "PIECE", "UndecodableBody", "decoder_for"]

#: the most one step of decoding produces, whatever the input
PIECE = 64 * 1024


def _bounded_brotli() -> Any:
    """The ``brotli`` module if it is installed and can bound its output (>= 1.2)."""
    try:
        module = importlib.import_module("brotli")
    except ImportError:
        return None
    return module if hasattr(module.Decompressor(), "can_accept_more_data") else None


_BROTLI: Any = _bounded_brotli()

ACCEPT_ENCODING = "gzip, deflate, br" if _BROTLI is not None else "gzip, deflate"


class UndecodableBody(Exception):
    """The body's Content-Encoding is unknown, or its bytes do not decode."""


class Decoder:
    """Identity: the bytes as they came."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def end(self) -> Iterator[bytes]:
        return iter(())


class _Zlib(Decoder):
    """gzip (several members allowed) or deflate (zlib-wrapped or raw), bounded output."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._inflater: Any = None

    def _new(self, first: bytes) -> Any:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # RFC 1950 says zlib-wrapped; some servers send a raw deflate stream instead
        wrapped = bool(first) and first[0] & 0x0F == 8
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                if self._inflater is None:
                    self._inflater = self._new(data)
                inflater = self._inflater
                while True:
                    out = inflater.decompress(data, PIECE)
                    if out:
                        yield out
                    data = inflater.unconsumed_tail
                    if inflater.eof or (not data and len(out) < PIECE):
                        break
                if inflater.eof:  # a next gzip member may follow
                    data = inflater.unused_data
                    self._inflater = None
                    if self.encoding != "gzip":
                        data = b""
        except zlib.error as exc:
            raise UndecodableBody(f"its {self.encoding} data is corrupt ({exc})") from None

    def end(self) -> Iterator[bytes]:
        if self._inflater is not None and not self._inflater.eof:
            raise UndecodableBody(f"its {self.encoding} data ends early")
        return iter(())


class _Brotli(Decoder):
    """br, bounded output: what one step makes is about ``PIECE`` (brotli may overshoot
    it by a block; it never makes the whole body at once)."""

    def __init__(self) -> None:
        self._inflater = _BROTLI.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        inflater = self._inflater
        try:
            out = inflater.process(data, output_buffer_limit=PIECE)
            # drain what the input already holds: brotli takes no more input until then,
            # and may say it can before it made the last of it
            while True:
                if out:
                    yield out
                if inflater.is_finished():
                    return
                if inflater.can_accept_more_data():
                    if not out:
                        return  # drained: the next bytes are needed
                elif not out:  # neither output nor room for input: it would spin
                    raise UndecodableBody("its br data does not decode (no progress)")
                out = inflater.process(b"", output_buffer_limit=PIECE)
        except _BROTLI.error as exc:
            raise UndecodableBody(f"its br data is corrupt ({exc})") from None

    def end(self) -> Iterator[bytes]:
        if not self._inflater.is_finished():
            raise UndecodableBody("its br data ends early")
        return iter(())


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder of a ``Content-Encoding`` value, or ``UndecodableBody``."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return Decoder()
    if encoding in ("gzip", "x-gzip"):
        return _Zlib("gzip")
    if encoding == "deflate":
        return _Zlib("deflate")
    if encoding == "br" and _BROTLI is not None:
        return _Brotli()
    shown = encoding if len(encoding) <= 40 else encoding[:40] + "..."
    raise UndecodableBody(
        f"it is encoded as {shown!r}, which was not asked for (Accept-Encoding: "
        f"{ACCEPT_ENCODING}) and cannot be decoded in bounded memory"
    )
