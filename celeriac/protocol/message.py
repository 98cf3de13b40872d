"""Celery task message protocol v2: build and parse, as pure functions.

A message travels as an :class:`Envelope`: body bytes plus headers, properties and the
content type/encoding, with the exchange and routing key it is published to. Transports
move envelopes; this module knows what a *task* envelope contains:

* headers: ``lang, task, id, shadow, eta, expires, group, group_index, retries,
  timelimit [hard, soft], root_id, parent_id, argsrepr, kwargsrepr, origin,
  ignore_result, replaced_task_nesting, stamped_headers, stamps`` (+ custom headers);
* properties: ``correlation_id, reply_to, delivery_mode, priority`` (+ ``expiration``);
* body: ``[args, kwargs, {callbacks, errbacks, chain, chord}]``.

Protocol v1 bodies (a dict with ``task`` and ``id`` and no ``task`` header) are accepted
and converted, so very old producers still work.

The decoders here raise :class:`~celeriac.exceptions.DecodeError` (or its subclass
:class:`~celeriac.exceptions.InvalidMessageError`) for anything they cannot read, and
:class:`~celeriac.exceptions.ContentDisallowed` for a content type not accepted; they are
bounded by :class:`~celeriac.protocol.limits.Limits`.
"""

from __future__ import annotations

import datetime as dt
import os
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.exceptions import DecodeError, InvalidMessageError
from celeriac.protocol import compression, serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits

EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(slots=True)
class Envelope:
    """One message as transports move it."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    exchange: str = ""
    routing_key: str = ""
    #: Set by whoever built it when every header and property value is a JSON scalar (or a
    #: list of them, or an empty dict): encoders then skip looking for values to tag.
    plain: bool = False

    @property
    def priority(self) -> int:
        return int(self.properties.get("priority") or 0)


@dataclass(slots=True)
class TaskBody:
    """The decoded body of a task message."""

    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_EMBED))


_repr = reprlib.Repr()
_repr.maxstring = 1024
_repr.maxother = 1024
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 64


def safe_repr(value: Any, maxsize: int = 1024) -> str:
    """``repr`` that never raises and stays under ``maxsize`` characters."""
    try:
        text = repr(value)
    except Exception:  # a user's __repr__ may fail; the message must still go out
        text = _repr.repr(value)
    return text if len(text) <= maxsize else text[: maxsize - 3] + "..."


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO-8601 with offset; naive datetimes are taken as UTC (as Celery does)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def parse_datetime(value: Any) -> dt.datetime | None:
    """Parse a header timestamp (ISO-8601 text or seconds since the epoch); naive values
    are UTC. Raises :class:`~celeriac.exceptions.InvalidMessageError` for anything else,
    including times out of the range of ``datetime``."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, dt.datetime):
            parsed = value
        elif isinstance(value, int | float):
            parsed = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidMessageError(f"bad timestamp {value!r:.100}: {exc}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


class TaskMessageTemplate:
    """Everything about a task message that does not change from one call to the next.

    Made once per task (and call options) by the publisher; :meth:`envelope` then adds
    only the task id, the arguments and the parent ids, so a batch of calls costs one dict
    copy, one ``repr`` and one serializer call per message. Timestamps come in formatted.
    """

    __slots__ = (
        "compression",
        "embed",
        "empty_body",
        "headers",
        "plain",
        "properties",
        "repr_args",
        "repr_kwargs",
        "reprsize",
        "serializer",
    )

    def __init__(
        self,
        task_name: str,
        *,
        serializer: str = "json",
        compression_name: str | None = None,
        eta: str | None = None,
        expires: str | None = None,
        expiration_ms: int | None = None,
        retries: int = 0,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        group_id: str | None = None,
        group_index: int | None = None,
        shadow: str | None = None,
        callbacks: list[Any] | None = None,
        errbacks: list[Any] | None = None,
        chain: list[Any] | None = None,
        chord: Any = None,
        origin: str = "",
        reply_to: str = "",
        priority: int | None = None,
        delivery_mode: int = 2,
        ignore_result: bool = False,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
        replaced_task_nesting: int = 0,
        stamped_headers: list[str] | None = None,
        stamps: dict[str, Any] | None = None,
        extra_headers: Mapping[str, Any] | None = None,
        extra_properties: Mapping[str, Any] | None = None,
        argsrepr_maxsize: int = 1024,
    ) -> None:
        self.headers: dict[str, Any] = {
            "lang": "py",
            "task": task_name,
            "id": None,
            "shadow": shadow,
            "eta": eta,
            "expires": expires,
            "group": group_id,
            "group_index": group_index,
            "retries": retries,
            "timelimit": [time_limit, soft_time_limit],
            "root_id": None,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": kwargsrepr,
            "origin": origin,
            "ignore_result": ignore_result,
            "replaced_task_nesting": replaced_task_nesting,
            "stamped_headers": stamped_headers,
            "stamps": stamps or {},
        }
        if extra_headers:
            self.headers.update(extra_headers)
        self.repr_args = argsrepr is None
        self.repr_kwargs = kwargsrepr is None
        self.reprsize = argsrepr_maxsize
        self.embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
        self.serializer = serializers.get(serializer)
        self.compression = compression_name
        self.properties: dict[str, Any] = {
            "correlation_id": None,
            "reply_to": reply_to,
            "delivery_mode": delivery_mode,
            "priority": priority or 0,
        }
        if expiration_ms is not None:
            self.properties["expiration"] = str(max(expiration_ms, 0))
        if extra_properties:
            self.properties.update(extra_properties)
        # The varying headers (ids and reprs) are strings: plain if the fixed ones are.
        self.plain = serializers.plain_mapping(self.headers) and serializers.plain_mapping(
            self.properties
        )
        #: The body of a call without arguments, serialized once.
        self.empty_body: bytes | None = None

    def envelope(
        self,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> Envelope:
        headers = self.headers.copy()
        headers["id"] = task_id
        headers["root_id"] = root_id or task_id
        headers["parent_id"] = parent_id
        if self.repr_args:
            headers["argsrepr"] = safe_repr(args, self.reprsize)
        if self.repr_kwargs:
            headers["kwargsrepr"] = safe_repr(kwargs, self.reprsize)
        serializer = self.serializer
        if args or kwargs:
            body = serializer.dumps((args, kwargs, self.embed))
        elif self.empty_body is not None:
            body = self.empty_body
        else:
            body = self.empty_body = serializer.dumps(((), {}, self.embed))
        if self.compression:
            headers["compression"], body = compression.compress(body, self.compression)
        properties = self.properties.copy()
        properties["correlation_id"] = task_id
        return Envelope(
            body,
            headers,
            properties,
            serializer.content_type,
            serializer.content_encoding,
            plain=self.plain,
        )


def build_task_envelope(
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    root_id: str | None = None,
    parent_id: str | None = None,
    **options: Any,
) -> Envelope:
    """The envelope of one task call (see :class:`TaskMessageTemplate` for the options)."""
    template = TaskMessageTemplate(task_name, **options)
    return template.envelope(task_id, args, kwargs, root_id, parent_id)


def check_task_headers(headers: Mapping[str, Any], body_hint: str = "") -> None:
    """Raise :class:`InvalidMessageError` unless the v2 headers the worker needs are there."""
    missing = [name for name in ("task", "id") if not headers.get(name)]
    if missing:
        raise InvalidMessageError(
            f"message lacks required header(s) {', '.join(missing)}{body_hint}"
        )
    for name in ("task", "id"):
        if not isinstance(headers[name], str):
            raise InvalidMessageError(
                f"the {name!r} header must be a string, not {type(headers[name]).__name__}"
            )


def decode_task_body(
    envelope: Envelope, accept: frozenset[str] | None, *, limits: Limits = DEFAULT_LIMITS
) -> TaskBody:
    """Decompress and deserialize a v2 body into args, kwargs and the embedded workflow.

    Raises :class:`~celeriac.exceptions.ContentDisallowed` for a content type not in
    ``accept``, :class:`~celeriac.exceptions.DecodeError` for a body that cannot be read
    or is over a limit, and :class:`~celeriac.exceptions.InvalidMessageError` for one that
    is not ``[args, kwargs, embed]`` with the types the worker reads (see
    :func:`check_embed`).
    """
    payload = _read_body(envelope, accept, limits)
    if isinstance(payload, dict):  # protocol v1 body that slipped through
        return _v1_body(payload)
    try:
        args, kwargs, embed = payload
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(
            f"body is not [args, kwargs, embed]: {safe_repr(payload, 200)}"
        ) from exc
    if (
        not isinstance(args, (list, tuple))  # a tuple of types: faster than a union here
        or not isinstance(kwargs, dict)
        or (kwargs and not _STR.issuperset(map(type, kwargs)))  # keys are argument names
    ):
        raise _bad_arguments(args, kwargs)
    if embed is None:
        return TaskBody(list(args), kwargs, dict(EMPTY_EMBED))
    if not isinstance(embed, dict):
        raise InvalidMessageError(f"body embed must be an object, not {type(embed).__name__}")
    if embed != EMPTY_EMBED:  # a workflow (the comparison is the cheap way to tell)
        check_embed(embed)
    return TaskBody(list(args), kwargs, embed or dict(EMPTY_EMBED))


def _read_body(envelope: Envelope, accept: frozenset[str] | None, limits: Limits) -> Any:
    body = envelope.body
    if len(body) > limits.max_message_bytes:
        raise DecodeError(
            f"body of {len(body)} bytes is over max_message_bytes={limits.max_message_bytes}"
        )
    compressed_with = envelope.headers.get("compression")
    if compressed_with:
        body = compression.decompress(body, compressed_with, limits=limits)
    return serializers.loads(body, envelope.content_type, accept, limits=limits)


_STR = frozenset({str})


def _bad_arguments(args: Any, kwargs: Any) -> InvalidMessageError:
    if isinstance(args, list | tuple) and isinstance(kwargs, dict):
        return InvalidMessageError("body kwargs must have text keys (argument names)")
    return InvalidMessageError(
        f"body args must be a list and kwargs an object, not {type(args).__name__} "
        f"and {type(kwargs).__name__}"
    )


def check_embed(embed: Mapping[str, Any]) -> None:
    """Raise :class:`~celeriac.exceptions.InvalidMessageError` unless the workflow in a
    body's embed has the shape the worker reads: ``callbacks``, ``errbacks`` and ``chain``
    null or lists of signatures, ``chord`` null or one signature.

    A signature is an object with a text ``task`` and, when present, a list ``args`` and
    objects ``kwargs`` and ``options``; what a group or chord keeps inside its ``kwargs``
    is read (and checked) by canvas when the workflow moves on.
    """
    for name in ("callbacks", "errbacks", "chain"):
        signatures = embed.get(name)
        if signatures is None:
            continue
        if not isinstance(signatures, list | tuple):
            raise InvalidMessageError(
                f"embed {name} must be a list of signatures, not {type(signatures).__name__}"
            )
        for signature in signatures:
            _check_signature(signature, name)
    chord = embed.get("chord")
    if chord is not None:
        _check_signature(chord, "chord")


_SIGNATURE_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("args", (list, tuple)),
    ("kwargs", dict),
    ("options", dict),
)


def _check_signature(signature: Any, where: str) -> None:
    if not isinstance(signature, dict) or not isinstance(signature.get("task"), str):
        raise InvalidMessageError(
            f"embed {where}: a signature is an object with a task name, "
            f"not {safe_repr(signature, 100)}"
        )
    for name, kinds in _SIGNATURE_FIELDS:
        value = signature.get(name)
        if value is not None and not isinstance(value, kinds):
            raise InvalidMessageError(
                f"embed {where}: a signature's {name} is a {type(value).__name__}"
            )


def _v1_body(payload: dict[str, Any]) -> TaskBody:
    args = payload.get("args") or ()
    kwargs = payload.get("kwargs") or {}
    if (
        not isinstance(args, list | tuple)
        or not isinstance(kwargs, dict)
        or not _STR.issuperset(map(type, kwargs))
    ):
        raise _bad_arguments(args, kwargs)
    embed = {
        "callbacks": payload.get("callbacks"),
        "errbacks": payload.get("errbacks"),
        "chain": None,
        "chord": payload.get("chord"),
    }
    check_embed(embed)
    return TaskBody(list(args), dict(kwargs), embed)


def upgrade_v1(
    envelope: Envelope, accept: frozenset[str] | None, *, limits: Limits = DEFAULT_LIMITS
) -> Envelope:
    """Give a protocol v1 message (no ``task`` header) the v2 headers, in place.

    A v1 body is a dict holding the task, its id and options. Its ``timelimit`` is already
    ``(hard, soft)``, as in v2; times are local when its ``utc`` flag is false. Raises
    :class:`~celeriac.exceptions.ContentDisallowed` for a content type not in ``accept``,
    :class:`~celeriac.exceptions.DecodeError` for a body that cannot be read or is over a
    limit, and :class:`~celeriac.exceptions.InvalidMessageError` for a body that is not a
    v1 task.
    """
    if "task" in envelope.headers:
        return envelope
    payload = _read_body(envelope, accept, limits)
    if not isinstance(payload, dict) or "task" not in payload or "id" not in payload:
        raise InvalidMessageError(
            "message has no 'task' header and its body is not a protocol v1 task"
        )
    timelimit = payload.get("timelimit") or (None, None)
    if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
        raise InvalidMessageError(f"v1 timelimit is not [hard, soft]: {safe_repr(timelimit, 100)}")
    utc = payload.get("utc", True)
    envelope.headers.update(
        {
            "lang": payload.get("lang") or "py",
            "task": payload["task"],
            "id": payload["id"],
            "shadow": payload.get("shadow"),
            "eta": _v1_time(payload.get("eta"), utc),
            "expires": _v1_time(payload.get("expires"), utc),
            "retries": payload.get("retries", 0),
            "timelimit": list(timelimit),
            "group": payload.get("group") or payload.get("taskset"),
            "group_index": payload.get("group_index"),
            "root_id": payload.get("root_id") or payload["id"],
            "parent_id": payload.get("parent_id"),
            "argsrepr": payload.get("argsrepr") or safe_repr(payload.get("args")),
            "kwargsrepr": payload.get("kwargsrepr") or safe_repr(payload.get("kwargs")),
            "origin": payload.get("origin"),
        }
    )
    return envelope


def _v1_time(value: Any, utc: Any) -> Any:
    # A naive v1 time with ``utc: false`` is the producer's local time: make it explicit.
    if utc or not isinstance(value, str):
        return value
    try:
        parsed = dt.datetime.fromisoformat(value)
        return parsed.astimezone().isoformat() if parsed.tzinfo is None else value
    except (ValueError, OverflowError, OSError):  # not a time, or out of range locally
        return value


def new_task_id() -> str:
    """A random (version 4) UUID string, as Celery's task ids; about 3x faster than uuid4()."""
    return _uuid4_from_hex(os.urandom(16).hex())


def new_task_ids(count: int) -> list[str]:
    """``count`` task ids from one read of the random source (a batch of calls)."""
    digits = os.urandom(16 * count).hex()
    return [_uuid4_from_hex(digits[start : start + 32]) for start in range(0, 32 * count, 32)]


def _uuid4_from_hex(digits: str) -> str:
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
