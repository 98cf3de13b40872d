"""Body compression, named as kombu names it on the wire.

The ``compression`` header carries a MIME type (``application/x-gzip``), not a short name.
Decompression stops at ``max_decompressed_bytes`` (see :mod:`celeriac.protocol.limits`):
a small body that would inflate to gigabytes costs no more than the limit.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from celeriac.exceptions import DecodeError, ImproperlyConfigured
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits


class _Decompressor(Protocol):
    """What zlib's, bz2's and lzma's incremental decompressors have in common."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Compressor:
    content_type: str
    compress: Callable[[bytes], bytes]
    #: A new incremental decompressor, for one stream.
    decompressor: Callable[[], _Decompressor]
    #: Whether the data may hold more streams, one after the other, as ``bz2.decompress``
    #: and ``lzma.decompress`` read them (``zlib.decompress`` ignores what follows one).
    multistream: bool


_ZLIB = Compressor("application/x-gzip", zlib.compress, zlib.decompressobj, False)
_BZ2 = Compressor("application/x-bz2", bz2.compress, bz2.BZ2Decompressor, True)
_LZMA = Compressor("application/x-lzma", lzma.compress, lzma.LZMADecompressor, True)

_BY_NAME: dict[str, Compressor] = {
    "zlib": _ZLIB,
    "gzip": _ZLIB,
    "bzip2": _BZ2,
    "bz2": _BZ2,
    "lzma": _LZMA,
    "xz": _LZMA,
}
_BY_CONTENT_TYPE = {compressor.content_type: compressor for compressor in _BY_NAME.values()}


def resolve(name: str) -> Compressor:
    found = _BY_NAME.get(name) or _BY_CONTENT_TYPE.get(name)
    if found is None:
        raise ImproperlyConfigured(
            f"unknown compression {name!r} (known: {', '.join(sorted(_BY_NAME))})"
        )
    return found


def compress(data: bytes, name: str) -> tuple[str, bytes]:
    """Compress; return ``(header value, compressed bytes)``."""
    compressor = resolve(name)
    return compressor.content_type, compressor.compress(data)


def decompress(data: bytes, header_value: Any, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The body ``data`` compressed as the ``compression`` header says.

    Raises :class:`~celeriac.exceptions.DecodeError` for an unknown compression, data that
    is corrupt or ends early, and output beyond ``limits.max_decompressed_bytes`` (found
    without inflating more than that).
    """
    compressor = None
    if isinstance(header_value, str):
        compressor = _BY_CONTENT_TYPE.get(header_value) or _BY_NAME.get(header_value)
    if compressor is None:
        raise DecodeError(f"unknown compression {header_value!r:.100}")
    try:
        return _inflate(compressor, data, limits.max_decompressed_bytes)
    except Exception as exc:  # ours, or zlib.error, OSError, LZMAError, MemoryError...
        raise DecodeError(f"cannot decompress {header_value} body: {exc}") from exc


def _inflate(compressor: Compressor, data: bytes, limit: int) -> bytes:
    parts: list[bytes] = []
    room = limit + 1  # asking for one byte more than allowed tells whether there is more
    while True:
        decompressor = compressor.decompressor()
        try:
            part = decompressor.decompress(data, room)
        except Exception:
            if parts:
                break  # what follows the streams is not one: ignored, as bz2/lzma do
            raise
        parts.append(part)
        room -= len(part)
        if room <= 0:
            raise DecodeError(f"it expands beyond max_decompressed_bytes={limit}")
        if not decompressor.eof:
            raise DecodeError("the compressed data ends early")
        data = decompressor.unused_data
        if not data or not compressor.multistream:
            break
    return b"".join(parts)
