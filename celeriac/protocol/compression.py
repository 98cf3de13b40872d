"""Body compression, named as kombu names it on the wire.

The ``compression`` header carries a MIME type (``application/x-gzip``), not a short name.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from celeriac.exceptions import DecodeError, ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class Compressor:
    content_type: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


_ZLIB = Compressor("application/x-gzip", zlib.compress, zlib.decompress)
_BZ2 = Compressor("application/x-bz2", bz2.compress, bz2.decompress)
_LZMA = Compressor("application/x-lzma", lzma.compress, lzma.decompress)

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


def decompress(data: bytes, header_value: str) -> bytes:
    compressor = _BY_CONTENT_TYPE.get(header_value) or _BY_NAME.get(header_value)
    if compressor is None:
        raise DecodeError(f"unknown compression {header_value!r}")
    try:
        return compressor.decompress(data)
    except Exception as exc:
        raise DecodeError(f"cannot decompress {header_value} body: {exc}") from exc
