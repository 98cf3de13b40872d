"""The client's hot path: route, build and publish task messages.

Per-app state that does not change between calls (origin, reply-to id, routes, defaults)
is computed once; per call there is one dict for the headers, one serializer call and one
transport call, which takes a whole batch when ``send_many`` is used.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import _state, signals
from celeriac.app.routing import Route, RouteResolver
from celeriac.exceptions import OperationalError
from celeriac.protocol.message import (
    Envelope,
    TaskMessageTemplate,
    decode_task_body,
    isoformat,
    new_task_id,
    new_task_ids,
    parse_datetime,
)
from celeriac.transports.base import Transport
from celeriac.wire.queues import QueueSpec

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.publish")

#: Call options that go straight into :class:`TaskMessageTemplate`.
_TEMPLATE_OPTIONS = (
    "serializer",
    "compression",
    "reply_to",
    "delivery_mode",
    "headers",
    "retries",
    "time_limit",
    "soft_time_limit",
    "group_id",
    "group_index",
    "shadow",
    "argsrepr",
    "kwargsrepr",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
)

_NON_PUBLISH_OPTIONS = frozenset(
    {
        "add_to_parent",
        "result_cls",
        "producer",
        "connection",
        "router",
        "publisher",
        "route_name",
        "retry",
        "retry_policy",
        "declare",
        "mandatory",
        "immediate",
        "exchange_type",
    }
)


#: Call options that default to the task's attribute of the same name.
_TASK_OPTIONS = (
    "serializer",
    "compression",
    "priority",
    "time_limit",
    "soft_time_limit",
    "expires",
    "ignore_result",
)


def _routing_options(options: dict[str, Any]) -> dict[str, Any] | None:
    """The call's ``queue``/``exchange``/``routing_key``, taken out of ``options``; None
    when it gives none (then the route is the task's, cached)."""
    queue, exchange = options.pop("queue", None), options.pop("exchange", None)
    routing_key = options.pop("routing_key", None)
    if queue or exchange is not None or routing_key is not None:
        return {"queue": queue, "exchange": exchange, "routing_key": routing_key}
    return None


def _default_to_task(options: dict[str, Any], task_type: object) -> None:
    for option in _TASK_OPTIONS:
        if options.get(option) is None:
            options[option] = getattr(task_type, option, None)


def _calling_request() -> _state.TaskRequest | None:
    """The request of the task a call is made in; None outside tasks and in direct calls."""
    task = _state.get_current_task()
    if task is None or task.request.called_directly:
        return None
    return task.request


def _ids_from_caller(root_id: str | None, parent_id: str | None) -> tuple[str | None, str | None]:
    """Root and parent ids of a call, from the task it is made in where not given."""
    request = _calling_request()
    if request is None:
        return root_id, parent_id
    return root_id or request.root_id, parent_id or request.id


def _times(
    countdown: float | None,
    eta: dt.datetime | str | None,
    expires: float | dt.datetime | str | None,
) -> tuple[str | None, str | None, int | None]:
    """The ``eta`` and ``expires`` headers, and the broker's time to live in milliseconds."""
    if countdown is None and eta is None and expires is None:
        return None, None, None
    now = dt.datetime.now(dt.UTC)
    if countdown is not None:
        eta = now + dt.timedelta(seconds=countdown)
    eta_text = eta if isinstance(eta, str) or eta is None else isoformat(eta)
    return (eta_text, *_expiry(expires, now))


def _expiry(
    expires: float | dt.datetime | str | None, now: dt.datetime
) -> tuple[str | None, int | None]:
    if isinstance(expires, int | float):
        expires = now + dt.timedelta(seconds=expires)
    if isinstance(expires, str):
        # Kept as given (a retry passes its header on), but the broker TTL is still due.
        parsed = parse_datetime(expires)
        ttl = None if parsed is None else int((parsed - now).total_seconds() * 1000)
        return expires, ttl
    if isinstance(expires, dt.datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return isoformat(expires), int((expires - now).total_seconds() * 1000)
    return expires, None


def _add_workflow(options: dict[str, Any], fields: dict[str, Any]) -> None:
    """Callbacks, errbacks, chain and chord of a call, its signatures as plain dicts."""
    fields["callbacks"] = _signature_dicts(options.pop("link", None))
    fields["errbacks"] = _signature_dicts(options.pop("link_error", None))
    chain, chord = options.pop("chain", None), options.pop("chord", None)
    fields["chain"] = [dict(step) for step in chain] if chain else None
    fields["chord"] = dict(chord) if chord else None


def _body_tuple(envelope: Envelope) -> tuple[Any, Any, Any]:
    body = decode_task_body(envelope, None)
    return (tuple(body.args), body.kwargs, body.embed)


def _signature_dicts(value: Any) -> list[Any] | None:
    if not value:
        return None
    if isinstance(value, Mapping):
        return [dict(value)]
    return [dict(item) for item in value]


class Publisher:
    """Builds and sends task messages for one app, with one transport per thread."""

    def __init__(self, app: Celery) -> None:
        conf = app.conf
        self.app = app
        self.routes = RouteResolver(conf)
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = app.oid
        self.serializer: str = conf.task_serializer
        self.compression: str | None = conf.task_compression
        self.delivery_mode: int = conf.task_default_delivery_mode
        self.default_priority: int | None = conf.task_default_priority
        self.inherit_priority: bool = conf.task_inherit_parent_priority
        self.retry: bool = conf.task_publish_retry
        self.retry_policy: Mapping[str, Any] = conf.task_publish_retry_policy
        self.ignore_result: bool = conf.task_ignore_result
        self._local = threading.local()
        self._templates: dict[tuple[str, int], tuple[TaskMessageTemplate, Route]] = {}
        # rpc:// results come back to a queue named by this app's oid (the reply_to of
        # every message); it must exist before a worker replies, see ``_declare_reply_queue``.
        self._reply_queue_pending = str(conf.result_backend or "").startswith("rpc:")

    # -- connections
    def transport(self) -> Transport:
        """This thread's transport (a new one after fork)."""
        local = self._local
        transport: Transport | None = getattr(local, "transport", None)
        if transport is None or local.pid != os.getpid():
            # Publishing retries by task_publish_retry_policy, so the transport must not
            # retry on its own (by the broker_connection_* settings meant for workers).
            transport = self.app.connection_for_write(connection_retry=False)
            local.transport, local.pid, local.declared = transport, os.getpid(), set()
        return transport

    def close(self) -> None:
        transport = getattr(self._local, "transport", None)
        if transport is not None and self._local.pid == os.getpid():
            transport.close()
        self._local = threading.local()

    # -- building
    def build(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        task_type: Any = None,
        task_id: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        **options: Any,
    ) -> tuple[str, Envelope, Route]:
        """Make the envelope of one call; return ``(task_id, envelope, route)``."""
        template, route = self.template(name, task_type, options, args, kwargs)
        task_id = task_id or new_task_id()
        parent = _state.get_current_task()
        if parent is not None:
            request = parent.request
            if not request.called_directly:
                parent_id = parent_id or request.id
                root_id = root_id or request.root_id
        envelope = template.envelope(task_id, args or (), kwargs or {}, root_id, parent_id)
        envelope.exchange = route.exchange
        envelope.routing_key = route.routing_key
        return task_id, envelope, route

    def build_many(
        self,
        name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
        task_type: Any = None,
        **options: Any,
    ) -> list[tuple[str, Envelope, Route]]:
        """Envelopes of many calls of one task with the same options.

        The template is made once for the batch unless a router may look at the arguments.
        """
        if not self.routes.cacheable or "task_id" in options:
            return [self.build(name, args, kwargs, task_type, **options) for args, kwargs in calls]
        root_id, parent_id = options.pop("root_id", None), options.pop("parent_id", None)
        template, route = self.template(name, task_type, options)
        root_id, parent_id = _ids_from_caller(root_id, parent_id)
        built = []
        for task_id, (args, kwargs) in zip(new_task_ids(len(calls)), calls, strict=True):
            envelope = template.envelope(task_id, args or (), kwargs or {}, root_id, parent_id)
            envelope.exchange, envelope.routing_key = route.exchange, route.routing_key
            built.append((task_id, envelope, route))
        return built

    def template(
        self,
        name: str,
        task_type: Any,
        options: Mapping[str, Any],
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[TaskMessageTemplate, Route]:
        """The message template and route of a task; cached for calls without options."""
        cacheable = not options and self.routes.cacheable and not self.inherit_priority
        if cacheable:
            key = (name, id(task_type))
            cached = self._templates.get(key)
            if cached is None or getattr(task_type, "expires", None) is not None:
                cached = self._templates[key] = self._make_template(name, task_type, {})
            return cached
        return self._make_template(name, task_type, options, args, kwargs)

    def _make_template(
        self,
        name: str,
        task_type: Any,
        options: Mapping[str, Any],
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[TaskMessageTemplate, Route]:
        # Each step takes its options out of this copy; the rest become message properties.
        options = dict(options)
        task_queue = getattr(task_type, "queue", None)
        route = self.routes.route(
            name, task_queue, args, kwargs, _routing_options(options), task_type
        )
        if task_type is not None:
            _default_to_task(options, task_type)
        priority = self._priority(options.pop("priority", None), route)
        eta, expires, expiration_ms = _times(
            options.pop("countdown", None), options.pop("eta", None), options.pop("expires", None)
        )
        ignore_result = options.pop("ignore_result", None)
        fields = self._message_fields(options)
        template = TaskMessageTemplate(
            name,
            eta=eta,
            expires=expires,
            expiration_ms=expiration_ms,
            origin=self.origin,
            priority=priority,
            ignore_result=bool(self.ignore_result if ignore_result is None else ignore_result),
            **fields,
        )
        return template, route

    def _priority(self, priority: int | None, route: Route) -> int | None:
        """The call's priority, else the calling task's (``task_inherit_parent_priority``),
        else the route's, else ``task_default_priority``."""
        if priority is None and self.inherit_priority:
            request = _calling_request()
            if request is not None:
                priority = request.priority
        if priority is None:
            priority = route.priority if route.priority is not None else self.default_priority
        return priority

    def _message_fields(self, options: dict[str, Any]) -> dict[str, Any]:
        """The template's arguments from the rest of the call's options: those it knows
        (this app's settings where a call gives none), then the others as properties."""
        fields = {
            key: value for key in _TEMPLATE_OPTIONS if (value := options.pop(key, None)) is not None
        }
        fields["serializer"] = fields.get("serializer") or self.serializer
        fields["compression_name"] = fields.pop("compression", None) or self.compression
        fields["reply_to"] = fields.get("reply_to") or self.reply_to
        fields["delivery_mode"] = fields.get("delivery_mode") or self.delivery_mode
        fields["extra_headers"] = fields.pop("headers", None)
        _add_workflow(options, fields)
        extra_properties = {
            key: value for key, value in options.items() if key not in _NON_PUBLISH_OPTIONS
        }
        fields["extra_properties"] = extra_properties or None
        return fields

    # -- sending
    def publish(
        self,
        envelopes: Sequence[Envelope],
        queues: Sequence[QueueSpec],
        retry: bool | None = None,
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare the queues not yet declared by this thread, then publish the batch.

        ``retry``/``retry_policy`` override ``task_publish_retry``/``_retry_policy`` for
        this batch (``apply_async(retry=False)``), as in Celery.
        """
        send_signals = (
            signals.before_task_publish.has_listeners()
            or signals.after_task_publish.has_listeners()
        )
        bodies: list[tuple[Any, Any, Any]] = []
        if send_signals:
            # Receivers get the body as Celery gives it: (args, kwargs, embed), decoded.
            bodies = [_body_tuple(envelope) for envelope in envelopes]
            for envelope, body in zip(envelopes, bodies, strict=True):
                envelope.plain = False  # receivers may add headers of any type
                signals.before_task_publish.send(
                    sender=envelope.headers["task"],
                    body=body,
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    headers=envelope.headers,
                    properties=envelope.properties,
                    declare=list(queues),
                    retry_policy=self.retry_policy,
                )
        if self._reply_queue_pending:
            self._declare_reply_queue()
        self._with_retries(
            lambda transport: self._send(transport, envelopes, queues),
            self.retry if retry is None else retry,
            {**self.retry_policy, **(retry_policy or {})},
        )
        if send_signals:
            for envelope, body in zip(envelopes, bodies, strict=True):
                signals.after_task_publish.send(
                    sender=envelope.headers["task"],
                    body=body,
                    headers=envelope.headers,
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                )

    def _declare_reply_queue(self) -> None:
        # RabbitMQ drops a reply routed to no queue, so the rpc:// backend declares its reply
        # queue before the first task goes out (as Celery's ``on_task_call``).
        self.app.backend.declare_reply_queue()
        self._reply_queue_pending = False

    def _send(
        self, transport: Transport, envelopes: Sequence[Envelope], queues: Sequence[QueueSpec]
    ) -> None:
        declared: set[str] = self._local.declared
        missing = [queue for queue in queues if queue.name not in declared]
        if missing:
            unique = list({queue.name: queue for queue in missing}.values())
            transport.declare(unique)
            declared.update(queue.name for queue in unique)
        transport.publish(envelopes)

    def _with_retries(
        self, action: Callable[[Transport], None], retry: bool, policy: Mapping[str, Any]
    ) -> None:
        max_retries = int(policy.get("max_retries", 3)) if retry else 0
        interval = float(policy.get("interval_start", 0))
        step = float(policy.get("interval_step", 0.2))
        interval_max = float(policy.get("interval_max", 1))
        attempt = 0
        while True:
            transport = self.transport()
            try:
                action(transport)
                return
            except (OperationalError, ConnectionError, OSError) as exc:
                if attempt >= max_retries:
                    raise OperationalError(
                        f"cannot publish to {transport.url}: {exc} "
                        f"(gave up after {attempt} retries)"
                    ) from exc
                attempt += 1
                logger.warning(
                    "Publishing failed (%s); retry %d/%d in %.2fs",
                    exc,
                    attempt,
                    max_retries,
                    interval,
                )
                self.close()
                time.sleep(interval)
                interval = min(interval + step, interval_max)
