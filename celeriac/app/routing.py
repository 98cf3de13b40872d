"""Where a task message goes: queues, exchanges and ``task_routes``, resolved once per task.

Celery's publishing rule is kept so Celery workers find our messages and the reverse: a
task routed to a queue whose exchange is ``direct`` (and no explicit exchange was given) is
published to the default exchange ``""`` with the queue name as routing key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.exceptions import ImproperlyConfigured, QueueNotFound
from celeriac.wire.queues import QueueSpec


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange, as ``kombu.Exchange`` is used in configuration."""

    name: str = ""
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False


@dataclass(frozen=True)
class Queue:
    """A queue, as ``kombu.Queue`` is used in ``task_queues``."""

    name: str
    exchange: Exchange | str | None = None
    routing_key: str | None = None
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    max_priority: int | None = None
    queue_arguments: Mapping[str, Any] = field(default_factory=dict)

    def to_spec(self, default_exchange_type: str = "direct") -> QueueSpec:
        return queue_spec(self, default_exchange_type)


def queue_spec(queue: Any, default_exchange_type: str = "direct") -> QueueSpec:
    """Turn a celeriac ``Queue``, a ``kombu.Queue`` or a name into a :class:`QueueSpec`."""
    if isinstance(queue, QueueSpec):
        return queue
    if isinstance(queue, str):
        return QueueSpec(name=queue, exchange=queue, routing_key=queue)
    exchange = getattr(queue, "exchange", None)
    if isinstance(exchange, str) or exchange is None:
        exchange_name, exchange_type = exchange or queue.name, default_exchange_type
    else:
        exchange_name = exchange.name or queue.name
        exchange_type = getattr(exchange, "type", default_exchange_type) or default_exchange_type
    arguments = dict(getattr(queue, "queue_arguments", None) or {})
    max_priority = getattr(queue, "max_priority", None) or arguments.get("x-max-priority")
    return QueueSpec(
        name=queue.name,
        exchange=exchange_name,
        exchange_type=exchange_type,
        routing_key=getattr(queue, "routing_key", None) or queue.name,
        durable=bool(getattr(queue, "durable", True)),
        auto_delete=bool(getattr(queue, "auto_delete", False)),
        exclusive=bool(getattr(queue, "exclusive", False)),
        max_priority=max_priority,
        arguments=arguments,
    )


@dataclass(frozen=True, slots=True)
class Route:
    """The resolved destination of one task message."""

    queue: QueueSpec
    exchange: str
    routing_key: str
    priority: int | None = None


Router = Callable[..., Any]


def _compile_pattern(pattern: Any) -> Callable[[str], bool]:
    if isinstance(pattern, re.Pattern):
        return lambda name: pattern.match(name) is not None
    text = str(pattern)
    if any(char in text for char in "*?["):
        regex = re.compile(fnmatch.translate(text))
        return lambda name: regex.match(name) is not None
    return lambda name: name == text


class MappingRouter:
    """``task_routes`` given as a mapping (or ``(pattern, route)`` pairs) of task names to routes.

    Exact names are looked up first, then glob (``*``) and regex patterns in the order given,
    as Celery does. It looks at the task name only, so its answer can be cached per name.
    """

    def __init__(self, routes: Mapping[Any, Any] | Sequence[tuple[Any, Any]]) -> None:
        pairs = routes.items() if isinstance(routes, Mapping) else routes
        self.exact: dict[str, Any] = {}
        self.compiled: list[tuple[Callable[[str], bool], Any]] = []
        for pattern, route in pairs:
            if isinstance(pattern, str) and not any(char in pattern for char in "*?["):
                self.exact.setdefault(pattern, route)
            else:
                self.compiled.append((_compile_pattern(pattern), route))

    def __call__(self, name: str, *_: Any, **__: Any) -> Any:
        found = self.exact.get(name)
        if found is not None:
            return found
        for matches, target in self.compiled:
            if matches(name):
                return target
        return None


def prepare_routers(task_routes: Any) -> list[Router]:
    """``task_routes`` → router callables, read as Celery reads it.

    A mapping, or a list of ``(pattern, route)`` pairs, is one router; a callable is a
    router (an object with ``route_for_task`` too); a string is the import path of one;
    a list or tuple of these is consulted in order.
    """
    if not task_routes:
        return []
    if isinstance(task_routes, Mapping | str) or callable(task_routes):
        return [_router(task_routes)]
    items = list(task_routes)
    if items and all(_is_route_pair(item) for item in items):
        return [MappingRouter(items)]
    return [_router(item) for item in items]


def _is_route_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str | re.Pattern)
        and isinstance(item[1], Mapping | str)
    )


def _router(item: Any) -> Router:
    if isinstance(item, Mapping):
        return MappingRouter(item)
    if isinstance(item, str):
        module_name, _, attribute = item.replace(":", ".").rpartition(".")
        try:
            item = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"task_routes: cannot import router {item!r}: {exc}"
            ) from exc
    if isinstance(item, list | tuple):
        return MappingRouter(item)
    route_for_task = getattr(item, "route_for_task", None)
    if route_for_task is not None:  # Celery's old router objects
        return lambda name, args, kwargs, options, task=None: route_for_task(name, args, kwargs)
    if callable(item):
        return item  # type: ignore[no-any-return]
    raise ImproperlyConfigured(f"task_routes: {item!r} is not a router")


class RouteResolver:
    """Resolves and caches the route of each task name.

    Explicit ``queue``/``exchange``/``routing_key`` options at call time bypass the cache.
    Routers are consulted per call only when one of them is a user callable, since such a
    router may look at the arguments.
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.default_queue_name: str = conf["task_default_queue"]
        self.default_exchange_type: str = conf["task_default_exchange_type"]
        self.missing_exchange_type: str = (
            conf.get("task_create_missing_queue_exchange_type") or self.default_exchange_type
        )
        self.create_missing: bool = conf["task_create_missing_queues"]
        self.max_priority: int | None = conf["task_queue_max_priority"]
        self.queue_type: str = conf["task_default_queue_type"]
        self.queues: dict[str, QueueSpec] = {}
        for queue in conf["task_queues"] or ():
            spec = queue_spec(queue, self.default_exchange_type)
            if spec.max_priority is None and self.max_priority is not None:
                spec = dataclasses.replace(spec, max_priority=self.max_priority)
            self.queues[spec.name] = spec
        if self.default_queue_name not in self.queues:
            self.queues[self.default_queue_name] = self._new_queue(
                self.default_queue_name,
                conf.get("task_default_exchange") or self.default_queue_name,
                self.default_exchange_type,
                conf.get("task_default_routing_key") or self.default_queue_name,
            )
        self.routers = prepare_routers(conf["task_routes"])
        self.cacheable = all(isinstance(router, MappingRouter) for router in self.routers)
        self._cache: dict[str, Route] = {}

    def _new_queue(
        self,
        name: str,
        exchange: str | None = None,
        exchange_type: str | None = None,
        routing_key: str | None = None,
    ) -> QueueSpec:
        arguments: dict[str, Any] = {}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return QueueSpec(
            name=name,
            exchange=exchange or name,
            exchange_type=exchange_type or self.missing_exchange_type,
            routing_key=routing_key or name,
            max_priority=self.max_priority,
            arguments=arguments,
        )

    def get_queue(self, name: str) -> QueueSpec:
        spec = self.queues.get(name)
        if spec is None:
            if not self.create_missing:
                raise QueueNotFound(
                    f"queue {name!r} is not defined in task_queues "
                    "and task_create_missing_queues is off"
                )
            spec = self.queues[name] = self._new_queue(name)
        return spec

    def route(
        self,
        task_name: str,
        task_queue: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        task: Any = None,
    ) -> Route:
        """The route for one call; ``options`` are the call's routing options, if any."""
        if not options and self.cacheable:
            cached = self._cache.get(task_name)
            if cached is None:
                cached = self._cache[task_name] = self._resolve(task_name, task_queue, {}, task)
            return cached
        return self._resolve(task_name, task_queue, dict(options or {}), task, args, kwargs)

    def _resolve(
        self,
        task_name: str,
        task_queue: Any,
        options: dict[str, Any],
        task: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Route:
        if not (options.get("queue") or options.get("exchange") or options.get("routing_key")):
            for router in self.routers:
                found = router(task_name, args or (), kwargs or {}, options, task=task)
                if found:
                    options = {**_as_route_dict(found), **options}
                    break
        queue_option = options.get("queue") or task_queue or self.default_queue_name
        queue = (
            queue_spec(queue_option, self.default_exchange_type)
            if not isinstance(queue_option, str)
            else self.get_queue(queue_option)
        )
        exchange = options.get("exchange")
        if exchange is not None and not isinstance(exchange, str):
            exchange = exchange.name
        routing_key = options.get("routing_key")
        if exchange is None and routing_key is None and queue.exchange_type == "direct":
            exchange, routing_key = "", queue.name
        else:
            exchange = queue.exchange if exchange is None else exchange
            routing_key = queue.binding_key if routing_key is None else routing_key
        return Route(queue, exchange, routing_key, options.get("priority"))


def _as_route_dict(found: Any) -> dict[str, Any]:
    if isinstance(found, str):
        return {"queue": found}
    return dict(found)
