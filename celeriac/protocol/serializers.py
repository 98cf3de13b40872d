"""Content types: json (kombu's dialect, via orjson), msgpack, yaml and pickle.

A serializer is found by its short name (``json``) or its MIME type
(``application/json``). ``accept_content`` is turned once into a set of MIME types, so the
worker's per-message check is a set lookup.

Reading is bounded by :class:`~celeriac.protocol.limits.Limits`: the readers that walk a
value recursively (Python's json, PyYAML, a depth check after msgpack) refuse nesting deeper
than ``max_depth``; orjson, the usual reader, refuses nesting deeper than 1024 itself, so
the common case costs nothing. Sizes are bounded by the callers, which know whether they
read a message or a result.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import pickle
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from celeriac.exceptions import ContentDisallowed, DecodeError
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    #: ``loads`` with the limits to honour (the built-in serializers have one). Without
    #: it, :func:`loads` bounds only the size of what a registered serializer reads.
    bounded_loads: Callable[[bytes, Limits], Any] | None = None


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


def _untag(value: Any, levels: int, max_depth: int) -> Any:
    """``value`` with kombu's tags turned back into objects; ``levels`` is how many levels
    of lists and objects it may still hold (the walk recurses)."""
    if isinstance(value, dict):
        if levels <= 0:
            raise _too_deep("JSON", max_depth)
        if len(value) == 2 and "__type__" in value and "__value__" in value:
            return _untag_value(value["__type__"], value["__value__"])
        return {key: _untag(item, levels - 1, max_depth) for key, item in value.items()}
    if isinstance(value, list):
        if levels <= 0:
            raise _too_deep("JSON", max_depth)
        return [_untag(item, levels - 1, max_depth) for item in value]
    return value


def _untag_value(type_name: Any, value: Any) -> Any:
    convert = _UNTAG.get(type_name) if isinstance(type_name, str) else None
    if convert is None:
        raise DecodeError(f"unknown JSON type tag {type_name!r:.100}")
    try:
        return convert(value)
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
        raise DecodeError(f"bad {type_name} value in JSON: {exc}") from exc


def _too_deep(what: str, max_depth: int) -> DecodeError:
    return DecodeError(f"{what} nested deeper than max_depth={max_depth}")


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


def json_loads(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """A JSON document as kombu's json reads it: its tags turned back into objects.

    Raises :class:`~celeriac.exceptions.DecodeError` for text that is not JSON, an unknown
    tag or a bad tagged value, and nesting deeper than orjson's 1024 levels or, where
    Python walks the document (Python's json, tags), than ``limits.max_depth``.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # NaN/Infinity, nested deeper than orjson reads, or not JSON at all: json says which
        value = json_loads_exact(data, limits)
    except MemoryError as exc:
        raise DecodeError(f"JSON too large to read: {exc}") from exc
    else:
        if _may_hold_long_int(data):
            value = json_loads_exact(data, limits)
    # Walk the value only when a tag can be in it: most messages have none.
    marker: bytes | str = b"__type__" if isinstance(data, bytes | bytearray) else "__type__"
    if marker in data:  # type: ignore[operator]
        return _untag(value, limits.max_depth, limits.max_depth)
    return value


def json_parse(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, bool]:
    """JSON text as plain values (tags are left as the objects they are), and whether
    orjson read it: when it did not, only Python's json writes the value back as it was
    (integers beyond 64 bits, NaN). Raises :class:`~celeriac.exceptions.DecodeError`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json_loads_exact(data, limits), False
    except MemoryError as exc:
        raise DecodeError(f"JSON too large to read: {exc}") from exc
    if _may_hold_long_int(data):
        return json_loads_exact(data, limits), False
    return value, True


def json_loads_exact(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """JSON read by Python's json, as kombu reads it: integers of any size, NaN and
    Infinity; tags are left as they are.

    Raises :class:`~celeriac.exceptions.DecodeError` for text that is not JSON and for
    nesting deeper than ``limits.max_depth`` (checked on the text before json recurses).
    """
    try:
        if isinstance(data, str):
            text = data
        else:
            raw = bytes(data)
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json does
        if _json_nesting_exceeds(text, limits.max_depth):
            raise _too_deep("JSON", limits.max_depth)
        return json.loads(text)
    except (ValueError, RecursionError, MemoryError) as exc:  # JSONDecodeError is a ValueError
        raise DecodeError(f"not valid JSON: {exc}") from exc


#: A JSON string, closed or running to the end of the text: brackets in it do not nest.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _json_nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest deeper than ``max_depth``
    (text that is not JSON is left for the parser to refuse)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= max_depth:
        return False  # too few brackets to get that deep
    depth = 0
    for char in brackets:
        if char == "[" or char == "{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


_NESTING = (list, dict, tuple)


def _nesting_exceeds(value: Any, max_depth: int) -> bool:
    """Whether the lists, tuples and dicts of a decoded ``value`` nest deeper than
    ``max_depth`` (a list of scalars is 1 level). One pass without recursion; a container
    of scalars alone, the usual case, is checked in one call in C."""
    if type(value) not in _NESTING:
        return False
    plain = _PLAIN
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > max_depth:
            return True
        items = current.values() if type(current) is dict else current
        if plain.issuperset(map(type, items)):
            continue
        for item in items:
            if type(item) in _NESTING:
                stack.append((item, depth + 1))
    return False


# -- the others, imported on first use so that their packages stay optional --------------


def _msgpack_dumps(value: Any) -> bytes:
    import msgpack

    return msgpack.packb(value, use_bin_type=True)


def _msgpack_loads(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """msgpack as kombu reads it. Raises :class:`~celeriac.exceptions.DecodeError` for
    bytes that are not msgpack and for nesting deeper than ``limits.max_depth``."""
    import msgpack

    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack's errors share no base class but Exception
        raise DecodeError(f"not valid msgpack: {exc}") from exc
    if _nesting_exceeds(value, limits.max_depth):
        raise _too_deep("msgpack", limits.max_depth)
    return value


def _yaml_dumps(value: Any) -> bytes:
    import yaml

    return yaml.safe_dump(value).encode("utf-8")


def _yaml_loads(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """YAML as ``yaml.safe_load`` reads it. Raises :class:`~celeriac.exceptions.DecodeError`
    for bytes that are not one YAML document and for nesting deeper than
    ``limits.max_depth``."""
    from celeriac.protocol import yamlload

    return yamlload.load(data, limits.max_depth)


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    """Unpickle. Raises :class:`~celeriac.exceptions.DecodeError` for bytes that are not a
    pickle. Unpickling runs whatever code the pickle names, so it is bounded by nothing but
    trust: accept it only from producers you trust (``accept_content``)."""
    try:
        return pickle.loads(data)
    except Exception as exc:  # anything the named code raises, as well as pickle's errors
        raise DecodeError(f"not a valid pickle: {exc}") from exc


_BY_NAME: dict[str, Serializer] = {}
_BY_CONTENT_TYPE: dict[str, Serializer] = {}


def register(serializer: Serializer) -> None:
    """Register a serializer under its name and its content type."""
    _BY_NAME[serializer.name] = serializer
    _BY_CONTENT_TYPE[serializer.content_type] = serializer


register(Serializer("json", "application/json", "utf-8", json_dumps, json_loads, json_loads))
register(
    Serializer(
        "msgpack",
        "application/x-msgpack",
        "binary",
        _msgpack_dumps,
        _msgpack_loads,
        _msgpack_loads,
    )
)
register(Serializer("yaml", "application/x-yaml", "utf-8", _yaml_dumps, _yaml_loads, _yaml_loads))
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


def loads(
    data: bytes,
    content_type: str,
    accept: frozenset[str] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Any:
    """Deserialize ``data``; refuse content types not in ``accept`` (``None`` accepts all).

    Raises :class:`~celeriac.exceptions.ContentDisallowed` for a content type that is not
    accepted or has no serializer, and :class:`~celeriac.exceptions.DecodeError` for data
    the serializer cannot read and for nesting deeper than ``limits.max_depth``. The size
    of ``data`` is for the caller to bound: it knows whether it is a message or a result.
    """
    if accept is not None and content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content type {content_type!r}: "
            f"not in accept_content ({', '.join(sorted(accept))})"
        )
    found = _BY_CONTENT_TYPE.get(content_type)
    if found is None:
        raise ContentDisallowed(f"no serializer for content type {content_type!r}")
    bounded = found.bounded_loads
    try:
        return bounded(data, limits) if bounded is not None else found.loads(data)
    except ContentDisallowed:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc
