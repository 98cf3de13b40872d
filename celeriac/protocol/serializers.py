"""Content types: json (kombu's dialect, via orjson), msgpack, yaml and pickle.

A serializer is found by its short name (``json``) or its MIME type
(``application/json``). ``accept_content`` is turned once into a set of MIME types, so the
worker's per-message check is a set lookup.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import pickle
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from celeriac.exceptions import ContentDisallowed, DecodeError


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


# -- json: kombu's tagged-object dialect -------------------------------------------------

_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _tag(type_name: str, value: Any) -> dict[str, Any]:
    return {"__type__": type_name, "__value__": value}


def _json_default(value: Any) -> Any:
    # Called by orjson only for values it does not encode itself.
    if isinstance(value, dt.datetime):
        return _tag("datetime", value.isoformat())
    if isinstance(value, dt.date):
        return _tag("date", value.isoformat())
    if isinstance(value, dt.time):
        return _tag("time", value.isoformat())
    if isinstance(value, decimal.Decimal):
        return _tag("decimal", str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return _tag("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _tag("base64", base64.b64encode(raw).decode("ascii"))
    if isinstance(value, set | frozenset | tuple):
        return [_tag_uuids(item) for item in value]
    to_json = getattr(value, "__json__", None)
    if to_json is not None:
        return _tag_uuids(to_json())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _has_uuid(value: Any) -> bool:
    """Whether a UUID is anywhere in ``value``: one call, no recursion, no allocation for
    the usual message (this runs for every message published)."""
    stack = [value]
    while stack:
        current = stack.pop()
        cls = type(current)
        if cls is dict:
            items: Any = current.values()
        elif cls is tuple or cls is list:
            items = current
        else:
            if cls not in _PLAIN and isinstance(current, uuid.UUID):
                return True
            continue
        if len(items) > 16 and _PLAIN.issuperset(map(type, items)):
            continue  # a long run of plain values, checked in one pass in C
        for item in items:
            item_cls = type(item)
            if item_cls in _PLAIN:
                continue
            if item_cls is tuple or item_cls is list or item_cls is dict:
                stack.append(item)
            elif isinstance(item, uuid.UUID):
                return True
    return False


def plain_mapping(mapping: Mapping[str, Any]) -> bool:
    """Whether every value is a JSON scalar, a list of them or an empty dict: nothing in it
    that kombu's JSON would tag. Message headers are that shallow almost always."""
    plain = _PLAIN
    for value in mapping.values():
        kind = type(value)
        if kind in plain:
            continue
        if kind is list:
            if not plain.issuperset(map(type, value)):
                return False
            continue
        if kind is dict and not value:
            continue
        return False
    return True


def _tag_uuids(value: Any) -> Any:
    """A copy of ``value`` with its UUIDs tagged as kombu does (orjson would write them as
    bare strings); containers without one are kept as they are."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    if cls is tuple or cls is list:
        return [_tag_uuids(item) for item in value] if _has_uuid(value) else value
    if cls is dict:
        if not _has_uuid(value):
            return value
        return {key: _tag_uuids(item) for key, item in value.items()}
    if isinstance(value, uuid.UUID):
        return _tag("uuid", {"hex": value.hex})
    return value


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": lambda value: uuid.UUID(value["hex"] if isinstance(value, dict) else value),
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value),
}


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 2 and "__type__" in value and "__value__" in value:
            type_name = value["__type__"]
            try:
                return _UNTAG[type_name](value["__value__"])
            except KeyError:
                raise DecodeError(f"unknown JSON type tag {type_name!r}") from None
        return {key: _untag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untag(item) for item in value]
    return value


#: orjson holds integers in 64 bits: it refuses to write bigger ones and reads them as
#: floats, losing digits. Python's json (kombu's) keeps them exact, so text that may hold
#: one (a run of 19 digits: -2**63 - 1 has 19) is read, and a value holding one is written,
#: by the standard library. Also read by it: NaN and Infinity, which Python's json writes.
#: The run is found by turning every digit into 0 and searching for nineteen 0s: a third
#: of orjson's time on long texts, where a regular expression takes six times orjson's.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _may_hold_long_int(data: bytes | str) -> bool:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO)


def json_dumps(value: Any) -> bytes:
    if (type(value) is not tuple or not _plain_body(value)) and _has_uuid(value):
        value = _tag_uuids(value)
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits (rare); anything else fails here as well.
        text = json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")


def _plain_body(value: tuple[Any, ...]) -> bool:
    """A task body ``(args, kwargs, embed)`` of plain values and no workflow: no UUID."""
    if len(value) != 3:
        return False
    args, kwargs, embed = value
    plain = _PLAIN
    return (
        type(args) in (tuple, list)
        and plain.issuperset(map(type, args))
        and type(kwargs) is dict
        and plain.issuperset(map(type, kwargs.values()))
        and type(embed) is dict
        and plain.issuperset(map(type, embed.values()))
    )


def json_loads(data: bytes | str) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = json.loads(data)  # NaN/Infinity, or not JSON at all: json says which
    else:
        if _may_hold_long_int(data):
            value = json.loads(data)
    # Walk the value only when a tag can be in it: most messages have none.
    marker: bytes | str = b"__type__" if isinstance(data, bytes | bytearray) else "__type__"
    if marker in data:  # type: ignore[operator]
        return _untag(value)
    return value


# -- the others, imported on first use so that their packages stay optional --------------


def _msgpack_dumps(value: Any) -> bytes:
    import msgpack

    return msgpack.packb(value, use_bin_type=True)


def _msgpack_loads(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False)


def _yaml_dumps(value: Any) -> bytes:
    import yaml

    return yaml.safe_dump(value).encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    import yaml

    return yaml.safe_load(data)


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)


_BY_NAME: dict[str, Serializer] = {}
_BY_CONTENT_TYPE: dict[str, Serializer] = {}


def register(serializer: Serializer) -> None:
    """Register a serializer under its name and its content type."""
    _BY_NAME[serializer.name] = serializer
    _BY_CONTENT_TYPE[serializer.content_type] = serializer


register(Serializer("json", "application/json", "utf-8", json_dumps, json_loads))
register(Serializer("msgpack", "application/x-msgpack", "binary", _msgpack_dumps, _msgpack_loads))
register(Serializer("yaml", "application/x-yaml", "utf-8", _yaml_dumps, _yaml_loads))
register(
    Serializer("pickle", "application/x-python-serialize", "binary", _pickle_dumps, _pickle_loads)
)


def get(name_or_content_type: str) -> Serializer:
    """Return the serializer known by that short name or MIME type."""
    found = _BY_NAME.get(name_or_content_type) or _BY_CONTENT_TYPE.get(name_or_content_type)
    if found is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ContentDisallowed(f"unknown serializer {name_or_content_type!r} (known: {known})")
    return found


def content_types(names: Iterable[str]) -> frozenset[str]:
    """Turn ``accept_content`` (names or MIME types) into a set of MIME types."""
    return frozenset(get(name).content_type for name in names)


def dumps(value: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize; return ``(content_type, content_encoding, data)``."""
    found = get(serializer)
    return found.content_type, found.content_encoding, found.dumps(value)


def loads(data: bytes, content_type: str, accept: frozenset[str] | None = None) -> Any:
    """Deserialize ``data``; refuse content types not in ``accept`` (``None`` accepts all)."""
    if accept is not None and content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content type {content_type!r}: "
            f"not in accept_content ({', '.join(sorted(accept))})"
        )
    found = _BY_CONTENT_TYPE.get(content_type)
    if found is None:
        raise ContentDisallowed(f"no serializer for content type {content_type!r}")
    try:
        return found.loads(data)
    except ContentDisallowed:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc
