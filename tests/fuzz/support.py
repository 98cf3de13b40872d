"""What the fuzz tests share: the property every decoder must have, and ways to spoil bytes."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

from celeriac.exceptions import CeleriacError

T = TypeVar("T")

#: The time bound of one decode. Generous on purpose: inputs are at most a few hundred
#: kilobytes (decoded in milliseconds), but CI machines are shared and slow.
BOUND_SECONDS = 5.0


def settle(
    decode: Callable[[], T], allowed: tuple[type[BaseException], ...] = (CeleriacError,)
) -> T | BaseException:
    """Run ``decode``; it must return, or raise one of ``allowed``, within the bound.

    Anything else it raises propagates, so Hypothesis reports it with its traceback.
    """
    # The bound is on the decoder's work: a cyclic collection of what earlier examples left
    # behind (pytest keeps every log record of a test) may not land inside it.
    gc.disable()
    start = time.perf_counter()
    try:
        outcome: T | BaseException = decode()
    except allowed as exc:
        outcome = exc
    finally:
        elapsed = time.perf_counter() - start
        gc.enable()
    assert elapsed < BOUND_SECONDS, f"decoding took {elapsed:.1f}s"
    return outcome


_EDITS = ("truncate", "flip", "insert", "delete", "repeat")


@st.composite
def spoiled(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after one to four edits: cut short, a byte flipped, bytes inserted, removed
    or repeated. Valid messages spoiled this way reach deep into a decoder."""
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(_EDITS))
        size = len(data)
        at = draw(st.integers(0, size))
        if edit == "truncate":
            data = data[:at]
        elif edit == "flip" and size:
            at = min(at, size - 1)
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif edit == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif edit == "delete":
            data = data[:at] + data[draw(st.integers(at, min(size, at + 16))) :]
        elif edit == "repeat":
            end = draw(st.integers(at, min(size, at + 16)))
            data = data[:end] + data[at:end] + data[end:]
    return data


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)

#: Values any serializer writes (JSON's types), nested a few levels.
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

#: How deep a deeply nested input goes: around the limits (200, orjson's 1024, Python's
#: recursion limit) and far beyond them.
depths = st.integers(0, 300) | st.sampled_from([1023, 1024, 1025, 2000, 5000, 100_000])


def nested_json(depth: int, opener: str = "[", leaf: str = "1") -> str:
    """JSON text of ``depth`` arrays (``[``) or objects (``{``) around ``leaf``."""
    if opener == "[":
        return "[" * depth + leaf + "]" * depth
    return '{"k":' * depth + leaf + "}" * depth
