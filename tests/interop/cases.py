"""What both directions send, and what they must get back: arguments of every JSON type
and of the types kombu's JSON tags (``{"__type__": ..., "__value__": ...}``)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

MOMENT = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)

#: Positional arguments: JSON's own types (tuples travel as lists), then tagged ones.
ARGS: list[Any] = [
    42,
    -7,
    2**62,
    2**70,  # beyond 64 bits: Python's json keeps it exact, so must we
    -(2**63) - 1,
    1.5,
    -0.25,
    "héllo wörld ✓ 日本語 🚀",
    "",
    True,
    False,
    None,
    [1, "two", [3.0, None]],
    {"nested": {"deeper": [1, {"x": None, "ok": True}]}, "ünï": "cödé"},
    MOMENT,
    dt.datetime(2024, 1, 2, 3, 4, 5),  # naive
    dt.date(2024, 2, 29),
    dt.time(12, 30, 15, 500),
    decimal.Decimal("12345678901234567890.000000000001"),
    b"raw bytes",
    b"\xff\x00\xfe not utf-8",
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]
KWARGS: dict[str, Any] = {
    "when": MOMENT,
    "price": decimal.Decimal("-0.10"),
    "blob": b"\x00\x01",
    "text": "ça va — 🙂",
    "flag": False,
    "nothing": None,
    "numbers": [1, 2.5, -3],
    "tree": {"a": {"b": {"c": [True, None, "d"]}}},
}

#: The type names the worker must see for ARGS and KWARGS (as ``interop.echo`` reports).
ARG_TYPES = [
    "int", "int", "int", "int", "int", "float", "float", "str", "str", "bool", "bool", "NoneType",
    ["int", "str", ["float", "NoneType"]],
    {"nested": {"deeper": ["int", {"x": "NoneType", "ok": "bool"}]}, "ünï": "str"},
    "datetime", "datetime", "date", "time", "Decimal", "bytes", "bytes", "UUID",
]  # fmt: skip
KWARG_TYPES = {
    "when": "datetime",
    "price": "Decimal",
    "blob": "bytes",
    "text": "str",
    "flag": "bool",
    "nothing": "NoneType",
    "numbers": ["int", "float", "int"],
    "tree": {"a": {"b": {"c": ["bool", "NoneType", "str"]}}},
}


def assert_echoed(echoed: dict[str, Any]) -> None:
    """``interop.echo`` saw ARGS/KWARGS with their own types and sent them back intact."""
    assert echoed["types"] == {"args": ARG_TYPES, "kwargs": KWARG_TYPES}
    assert echoed["args"] == ARGS
    assert echoed["kwargs"] == KWARGS
    # Equality alone would let a naive datetime pass for an aware one.
    assert echoed["args"][14].tzinfo is not None
    assert echoed["args"][15].tzinfo is None
