"""Routing: ``task_routes`` in every form Celery accepts, ``task_queues``, and where the
message really lands on the in-memory broker."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, Exchange, Queue
from celeriac.app import current as app_current
from celeriac.app.routing import MappingRouter, RouteResolver, prepare_routers, queue_spec
from celeriac.exceptions import ImproperlyConfigured, QueueNotFound
from celeriac.protocol.message import Envelope

_names = itertools.count()


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


def make_app(**conf: Any) -> Celery:
    app = Celery("routing", broker=f"memory://routing-{next(_names)}", set_as_current=False)
    app.conf.update(conf)
    return app


def take(app: Celery, queue: str) -> list[Envelope]:
    transport = app.create_transport()
    deliveries = transport.fetch([queue], 100, 0.05)
    transport.ack(deliveries)
    transport.close()
    return [delivery.envelope for delivery in deliveries]


def resolver(**conf: Any) -> RouteResolver:
    return RouteResolver(make_app(**conf).conf)


def test_default_route_is_the_default_exchange_with_the_queue_name() -> None:
    route = resolver().route("any.task", None)
    assert route.queue.name == "celery"
    assert (route.exchange, route.routing_key) == ("", "celery")
    assert route.priority is None


def test_routes_dict_exact_glob_and_regex() -> None:
    routes = resolver(
        task_routes={
            "feed.tasks.*": {"queue": "feeds"},
            re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"},
            "web.tasks.render": "web",
            "*": {"queue": "fallback"},
            "feed.tasks.special": {"queue": "special"},
        }
    )
    assert routes.route("feed.tasks.import_feed", None).queue.name == "feeds"
    assert routes.route("video.tasks.encode", None).queue.name == "media"
    assert routes.route("image.tasks.resize", None).queue.name == "media"
    assert routes.route("web.tasks.render", None).queue.name == "web"
    assert routes.route("other.thing", None).queue.name == "fallback"
    # Exact names win over earlier patterns, as in Celery.
    assert routes.route("feed.tasks.special", None).queue.name == "special"


def test_routes_as_ordered_pairs() -> None:
    pairs = [
        ("feed.tasks.*", {"queue": "feeds"}),
        ("*", {"queue": "everything"}),
    ]
    for task_routes in (pairs, (pairs,)):
        routes = resolver(task_routes=task_routes)
        assert routes.route("feed.tasks.a", None).queue.name == "feeds"
        assert routes.route("web.a", None).queue.name == "everything"


def route_for_billing(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> Any:
    if name.startswith("billing."):
        return {"queue": "billing", "priority": 8}
    return None


def test_router_callables_and_lists_of_routers() -> None:
    seen: list[tuple[Any, ...]] = []

    def by_argument(name: str, args: Any, kwargs: Any, options: Any, task: Any = None) -> Any:
        seen.append((name, tuple(args), dict(kwargs)))
        return "big" if args and args[0] > 100 else None

    routes = resolver(
        task_routes=[by_argument, route_for_billing, {"*": {"queue": "rest"}}],
    )
    assert not routes.cacheable  # a callable may look at the arguments
    assert routes.route("x.add", None, (500,), {}, {}).queue.name == "big"
    assert routes.route("x.add", None, (1,), {"k": 1}, {}).queue.name == "rest"
    billing = routes.route("billing.charge", None, (1,), {}, {})
    assert billing.queue.name == "billing" and billing.priority == 8
    assert seen[:2] == [("x.add", (500,), {}), ("x.add", (1,), {"k": 1})]


def test_router_by_import_path() -> None:
    routers = prepare_routers(f"{__name__}.route_for_billing")
    assert routers[0]("billing.x", (), {}, {}) == {"queue": "billing", "priority": 8}
    routes = resolver(task_routes=(f"{__name__}:route_for_billing",))
    assert routes.route("billing.refund", None, (), {}, {}).queue.name == "billing"
    with pytest.raises(ImproperlyConfigured, match="no_such_module_xyz"):
        prepare_routers("no_such_module_xyz.router")
    with pytest.raises(ImproperlyConfigured, match="not a router"):
        prepare_routers([42])


def test_old_style_router_objects() -> None:
    class OldRouter:
        def route_for_task(self, task: str, args: Any = None, kwargs: Any = None) -> Any:
            return {"queue": "old"} if task == "legacy.task" else None

    routes = resolver(task_routes=(OldRouter(),))
    assert routes.route("legacy.task", None, (), {}, {}).queue.name == "old"
    assert routes.route("modern.task", None, (), {}, {}).queue.name == "celery"


def test_mapping_router_is_cached_per_name() -> None:
    routes = resolver(task_routes={"a.*": {"queue": "a"}})
    assert routes.cacheable
    assert routes.route("a.b", None) is routes.route("a.b", None)
    assert isinstance(prepare_routers({"x": "y"})[0], MappingRouter)
    assert prepare_routers(None) == []


def test_call_options_override_routes() -> None:
    routes = resolver(task_routes={"*": {"queue": "routed"}})
    assert routes.route("t", None, options={"queue": "explicit"}).queue.name == "explicit"
    # The task's own queue is used when no route matches.
    plain = resolver()
    assert plain.route("t", "task-queue").queue.name == "task-queue"


def test_task_queues_with_exchanges() -> None:
    media = Exchange("media", type="topic")
    routes = resolver(
        task_queues=[
            Queue("default", Exchange("default"), routing_key="default"),
            Queue("images", media, routing_key="media.image.#"),
            Queue("videos", media, routing_key="media.video.#", max_priority=10),
        ],
        task_default_queue="default",
        task_routes={"media.*": {"queue": "images", "routing_key": "media.image.png"}},
    )
    default = routes.route("anything", None)
    assert default.queue.name == "default"
    assert (default.exchange, default.routing_key) == ("", "default")
    image = routes.route("media.resize", None)
    assert image.queue.exchange_type == "topic"
    assert (image.exchange, image.routing_key) == ("media", "media.image.png")
    video = routes.route("clip", None, options={"queue": "videos"})
    assert (video.exchange, video.routing_key) == ("media", "media.video.#")
    assert video.queue.max_priority == 10


def test_default_exchange_settings_shape_the_default_queue() -> None:
    routes = resolver(
        task_default_queue="work",
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_default_routing_key="task.default",
    )
    route = routes.route("t", None)
    assert route.queue.name == "work"
    assert (route.queue.exchange, route.queue.exchange_type) == ("tasks", "topic")
    assert (route.exchange, route.routing_key) == ("tasks", "task.default")


def test_missing_queues_are_created_unless_disabled() -> None:
    created = resolver().route("t", None, options={"queue": "new-queue"})
    assert created.queue.name == "new-queue"
    assert (created.exchange, created.routing_key) == ("", "new-queue")
    strict = resolver(task_create_missing_queues=False, task_queues=[Queue("only")])
    with pytest.raises(QueueNotFound, match="undeclared"):
        strict.route("t", None, options={"queue": "undeclared"})
    assert strict.route("t", None, options={"queue": "only"}).queue.name == "only"


def test_queue_max_priority_and_quorum_settings() -> None:
    routes = resolver(
        task_queue_max_priority=10,
        task_default_queue_type="quorum",
        task_queues=[Queue("celery"), Queue("capped", max_priority=5)],
    )
    assert routes.get_queue("celery").max_priority == 10
    assert routes.get_queue("capped").max_priority == 5
    new = routes.get_queue("made-now")
    assert new.max_priority == 10 and new.arguments["x-queue-type"] == "quorum"


def test_queue_spec_from_names_and_objects() -> None:
    by_name = queue_spec("plain")
    assert (by_name.name, by_name.exchange, by_name.routing_key) == ("plain", "plain", "plain")
    spec = Queue(
        "q", "ex", routing_key="rk", queue_arguments={"x-max-priority": 7}, durable=False
    ).to_spec()
    assert (spec.exchange, spec.routing_key, spec.max_priority) == ("ex", "rk", 7)
    assert spec.durable is False
    assert queue_spec(spec) is spec


def test_priority_from_the_route_reaches_the_message() -> None:
    app = make_app(task_routes={"urgent.*": {"queue": "urgent", "priority": 9}})
    app.send_task("urgent.page", ())
    app.send_task("urgent.page", (), priority=2)
    routed, explicit = take(app, "urgent")
    assert routed.properties["priority"] == 9
    assert explicit.properties["priority"] == 2


def test_default_priority_setting() -> None:
    app = make_app(task_default_priority=3)
    app.send_task("t", ())
    [message] = take(app, "celery")
    assert message.properties["priority"] == 3


def test_messages_land_in_topic_bound_queues() -> None:
    media = Exchange("media", type="topic")
    app = make_app(
        task_queues=[
            Queue("images", media, routing_key="media.image.*"),
            Queue("all-media", media, routing_key="media.#"),
        ],
        task_routes={"resize": {"queue": "images", "routing_key": "media.image.png"}},
    )
    transport = app.create_transport()
    # The consumer side declares its queues (and bindings) first, as a worker does.
    transport.declare([queue_spec(queue) for queue in app.conf.task_queues])
    app.send_task("resize", (1,))
    [image] = take(app, "images")
    [copy] = take(app, "all-media")
    assert image.headers["id"] == copy.headers["id"]
    assert (image.exchange, image.routing_key) == ("media", "media.image.png")
    transport.close()


def test_a_router_queue_is_declared_on_publish() -> None:
    app = make_app(task_routes={"reports.*": "reports"})
    app.send_task("reports.monthly", ())
    [message] = take(app, "reports")
    assert (message.exchange, message.routing_key) == ("", "reports")


def test_routes_from_a_configuration_module(project: Callable[[dict[str, str]], Path]) -> None:
    project(
        {
            "routing_conf.py": """
                from celeriac import Exchange, Queue

                task_queues = (Queue("io", Exchange("io"), routing_key="io"),)
                task_routes = {"io.*": {"queue": "io"}}
            """
        }
    )
    app = make_app()
    app.config_from_object("routing_conf")
    app.send_task("io.read", ())
    [message] = take(app, "io")
    assert message.headers["task"] == "io.read"
