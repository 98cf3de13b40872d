"""Tasks: the decorator, names, options, the typing check, and what ``apply_async`` puts
on the wire (read back from the in-memory broker, so messages really went through
serialization)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.app import current as app_current
from celeriac.app.task import Context, Task
from celeriac.protocol.message import Envelope, TaskBody, decode_task_body
from celeriac.result import EagerResult

_names = itertools.count()


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


@pytest.fixture
def app() -> Celery:
    return Celery("proj", broker=f"memory://tasks-{next(_names)}", backend="memory://")


def published(app: Celery, queue: str = "celery") -> list[Envelope]:
    """Every message waiting in ``queue``, taken off the broker."""
    transport = app.create_transport()
    deliveries = transport.fetch([queue], 100, 0.05)
    transport.ack(deliveries)
    transport.close()
    return [delivery.envelope for delivery in deliveries]


def body(envelope: Envelope) -> TaskBody:
    return decode_task_body(envelope, None)


# -- the decorator and names


def test_bare_decorator_and_generated_name(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert isinstance(add, Task)
    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert add.app is app
    assert add.__wrapped__ is not None
    assert add(2, 3) == 5
    assert "tests.test_tasks.add" in repr(add)


def test_decorator_with_options_and_explicit_name(app: Celery) -> None:
    @app.task(name="math.multiply", max_retries=7, queue="math")
    def multiply(x: int, y: int) -> int:
        """Multiply two numbers."""
        return x * y

    assert multiply.name == "math.multiply"
    assert multiply.max_retries == 7
    assert multiply.queue == "math"
    assert multiply.__doc__ == "Multiply two numbers."
    assert app.tasks["math.multiply"] is multiply


def test_main_module_is_replaced_by_the_app_main_name(app: Celery) -> None:
    def script_task() -> None:
        return None

    script_task.__module__ = "__main__"
    task = app.task(script_task)
    assert task.name == "proj.script_task"


def test_gen_task_name_can_be_overridden() -> None:
    class ShortNames(Celery):
        def gen_task_name(self, name: str, module: str) -> str:
            return f"{module.rpartition('.')[2]}:{name}"

    app = ShortNames("short", broker="memory://short-names", set_as_current=False)

    @app.task
    def ping() -> str:
        return "pong"

    assert ping.name == "test_tasks:ping"
    assert "test_tasks:ping" in app.tasks


def test_bind_gives_the_task_as_self(app: Celery) -> None:
    @app.task(bind=True)
    def whoami(self: Task[Any, Any], suffix: str) -> tuple[str, str | None, bool]:
        return self.name + suffix, self.request.id, self.request.called_directly

    assert whoami("!") == (f"{__name__}.whoami!", None, True)
    result = whoami.apply(("?",), task_id="fixed-id")
    assert tuple(result.get()) == (f"{__name__}.whoami?", "fixed-id", False)
    # The typing check ignores ``self``.
    with pytest.raises(TypeError):
        whoami.delay()
    assert published(app) == []


def test_request_outside_a_task_is_a_direct_call_context(app: Celery) -> None:
    @app.task
    def noop() -> None:
        return None

    assert isinstance(noop.request, Context)
    assert noop.request.called_directly is True
    assert noop.request.id is None


def test_every_task_option_is_stored_on_the_class(app: Celery) -> None:
    options: dict[str, Any] = {
        "max_retries": 11,
        "default_retry_delay": 5,
        "rate_limit": "10/m",
        "ignore_result": True,
        "serializer": "msgpack",
        "compression": "zlib",
        "time_limit": 30,
        "soft_time_limit": 20,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "track_started": True,
        "priority": 6,
        "expires": 120,
        "queue": "special",
        "autoretry_for": (KeyError,),
        "dont_autoretry_for": (ValueError,),
        "retry_kwargs": {"max_retries": 2},
        "retry_backoff": 3,
        "retry_backoff_max": 90,
        "retry_jitter": False,
        "throws": (IndexError,),
        "store_errors_even_if_ignored": True,
        "acks_on_failure_or_timeout": False,
        "trail": False,
        "send_events": False,
        "typing": False,
    }

    @app.task(**options)
    def configured() -> None:
        return None

    cls = type(configured)
    for key, value in options.items():
        assert getattr(cls, key) == value, key

    # Defaults of an undecorated task follow Celery.
    @app.task
    def plain() -> None:
        return None

    assert (plain.max_retries, plain.default_retry_delay) == (3, 180)
    assert plain.rate_limit is None and plain.acks_late is None
    assert plain.autoretry_for == () and plain.retry_backoff is False
    assert plain.retry_backoff_max == 600 and plain.retry_jitter is True


def test_custom_base_class_with_hooks_and_options(app: Celery) -> None:
    calls: list[tuple[str, Any]] = []

    class Audited(Task[Any, Any]):
        acks_late = True
        max_retries = 1

        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(("before_start", tuple(args)))

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(("on_success", retval))

        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            calls.append(("on_failure", type(exc).__name__))

        def after_return(
            self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            calls.append(("after_return", status))

    @app.task(base=Audited, max_retries=4)
    def divide(x: int, y: int) -> float:
        return x / y

    assert isinstance(divide, Audited)
    assert divide.acks_late is True
    assert divide.max_retries == 4  # decorator options win over the base class
    assert divide.apply((6, 3)).get() == 2
    assert calls == [("before_start", (6, 3)), ("on_success", 2), ("after_return", "SUCCESS")]
    calls.clear()
    failed = divide.apply((1, 0))
    assert failed.state == states.FAILURE
    assert calls == [
        ("before_start", (1, 0)),
        ("on_failure", "ZeroDivisionError"),
        ("after_return", "FAILURE"),
    ]


def test_base_class_typing_false_is_inherited(app: Celery) -> None:
    class Untyped(Task[Any, Any]):
        typing = False

    @app.task(base=Untyped)
    def anything(x: int) -> int:
        return x

    anything.delay()  # no check: the worker would fail it
    [envelope] = published(app)
    assert body(envelope).args == []


# -- the typing check


def test_missing_argument_raises_in_the_caller_and_publishes_nothing(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="y"):
        add.delay(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        add.apply_async((1, 2, 3))
    with pytest.raises(TypeError):
        add.apply_async((1,), {"z": 2})
    with pytest.raises(TypeError):
        add.delay_many([(1, 2), (1,)])
    assert published(app) == []
    add.apply_async((1,), {"y": 2})
    assert len(published(app)) == 1


def test_typing_false_on_the_task_or_the_app_disables_the_check(app: Celery) -> None:
    @app.task(typing=False)
    def loose(x: int) -> int:
        return x

    loose.apply_async((1, 2, 3))
    assert len(published(app)) == 1
    lenient = Celery("lenient", broker="memory://lenient", strict_typing=False)

    @lenient.task
    def lenient_task(x: int) -> int:
        return x

    lenient_task.delay()
    assert len(published(lenient)) == 1


def test_send_task_does_not_check_arguments(app: Celery) -> None:
    @app.task
    def two(x: int, y: int) -> int:
        return x + y

    app.send_task(two.name, (1,))
    [envelope] = published(app)
    assert body(envelope).args == [1]


# -- what goes on the wire


def test_delay_message_shape(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 2)
    [envelope] = published(app)
    headers, properties = envelope.headers, envelope.properties
    expected_headers = {
        "lang": "py",
        "task": add.name,
        "id": result.id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": result.id,
        "parent_id": None,
        "argsrepr": "(2, 2)",
        "kwargsrepr": "{}",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    for key, value in expected_headers.items():
        assert headers[key] == value, key
    assert headers["origin"].startswith("gen") and "@" in headers["origin"]
    assert properties["correlation_id"] == result.id
    assert properties["reply_to"]
    assert properties["delivery_mode"] == 2
    assert properties["priority"] == 0
    assert "expiration" not in properties
    assert envelope.content_type == "application/json"
    assert envelope.content_encoding == "utf-8"
    assert (envelope.exchange, envelope.routing_key) == ("", "celery")
    decoded = body(envelope)
    assert decoded.args == [2, 2] and decoded.kwargs == {}
    assert decoded.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_apply_async_options_are_reflected_in_the_message(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    before = dt.datetime.now(dt.UTC)
    task_id = str(uuid.uuid4())
    add.apply_async(
        (1, 2),
        task_id=task_id,
        countdown=30,
        expires=600,
        priority=7,
        queue="special",
        time_limit=10,
        soft_time_limit=3,
        headers={"tenant": "acme"},
        ignore_result=True,
        argsrepr="(<redacted>,)",
        kwargsrepr="{...}",
        shadow="add-shadowed",
    )
    after = dt.datetime.now(dt.UTC)
    assert published(app) == []  # not on the default queue
    [envelope] = published(app, "special")
    headers, properties = envelope.headers, envelope.properties
    assert headers["id"] == task_id == properties["correlation_id"]
    eta = dt.datetime.fromisoformat(headers["eta"])
    expires = dt.datetime.fromisoformat(headers["expires"])
    assert eta.utcoffset() == dt.timedelta(0) and expires.utcoffset() == dt.timedelta(0)
    assert before + dt.timedelta(seconds=30) <= eta <= after + dt.timedelta(seconds=30)
    # A numeric expires counts from sending, not from the ETA.
    assert before + dt.timedelta(seconds=600) <= expires <= after + dt.timedelta(seconds=600)
    assert 599_000 <= int(properties["expiration"]) <= 600_000
    assert properties["priority"] == 7
    assert headers["timelimit"] == [10, 3]
    assert headers["tenant"] == "acme"
    assert headers["ignore_result"] is True
    assert headers["argsrepr"] == "(<redacted>,)" and headers["kwargsrepr"] == "{...}"
    assert headers["shadow"] == "add-shadowed"
    assert (envelope.exchange, envelope.routing_key) == ("", "special")


def test_eta_and_expires_as_datetimes(app: Celery) -> None:
    @app.task
    def tick() -> None:
        return None

    eta = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    expires = eta + dt.timedelta(hours=1)
    tick.apply_async(eta=eta, expires=expires)
    naive = dt.datetime(2030, 1, 2, 3, 4, 5)
    tick.apply_async(eta=naive)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    tick.apply_async(expires=past)
    aware, naive_message, expired = published(app)
    assert dt.datetime.fromisoformat(aware.headers["eta"]) == eta
    assert dt.datetime.fromisoformat(aware.headers["expires"]) == expires
    assert 7_100_000 < int(aware.properties["expiration"]) <= 7_200_000
    assert naive_message.headers["eta"] == "2030-01-02T03:04:05+00:00"
    assert naive_message.headers["expires"] is None
    assert expired.properties["expiration"] == "0"


def test_expires_as_an_iso_string_sets_the_expiration_too(app: Celery) -> None:
    @app.task
    def tick() -> None:
        return None

    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)).isoformat()
    tick.apply_async(expires=expires)
    [envelope] = published(app)
    assert envelope.headers["expires"] == expires
    assert 80_000 < int(envelope.properties["expiration"]) <= 90_000


def test_task_level_options_apply_to_every_call(app: Celery) -> None:
    @app.task(
        queue="tasks-q",
        priority=4,
        time_limit=60,
        soft_time_limit=50,
        expires=30,
        ignore_result=True,
        serializer="msgpack",
        compression="bzip2",
    )
    def configured(value: bytes) -> None:
        return None

    configured.delay(b"\x00\xff")
    [envelope] = published(app, "tasks-q")
    assert envelope.properties["priority"] == 4
    assert envelope.headers["timelimit"] == [60, 50]
    assert envelope.headers["expires"] is not None
    assert envelope.headers["ignore_result"] is True
    assert envelope.content_type == "application/x-msgpack"
    assert envelope.content_encoding == "binary"
    assert envelope.headers["compression"] == "application/x-bz2"
    assert body(envelope).args == [b"\x00\xff"]
    # Call options win over task options.
    configured.apply_async((b"",), priority=1, queue="other", serializer="json", compression=None)
    [override] = published(app, "other")
    assert override.properties["priority"] == 1
    assert override.content_type == "application/json"


def test_serializer_and_compression_per_call(app: Celery) -> None:
    @app.task
    def echo(value: Any) -> Any:
        return value

    echo.apply_async(({"nested": [1, 2]},), serializer="yaml", compression="zlib")
    echo.apply_async(({"nested": [1, 2]},), serializer="pickle")
    yaml_message, pickle_message = published(app)
    assert yaml_message.content_type == "application/x-yaml"
    assert yaml_message.headers["compression"] == "application/x-gzip"
    assert body(yaml_message).args == [{"nested": [1, 2]}]
    assert pickle_message.content_type == "application/x-python-serialize"
    assert "compression" not in pickle_message.headers
    assert body(pickle_message).args == [{"nested": [1, 2]}]


def test_app_wide_serializer_and_compression(app: Celery) -> None:
    app.conf.update(task_serializer="msgpack", task_compression="gzip")

    @app.task
    def echo(value: Any) -> Any:
        return value

    echo.delay("x")
    [envelope] = published(app)
    assert envelope.content_type == "application/x-msgpack"
    assert envelope.headers["compression"] == "application/x-gzip"


def test_link_and_link_error_travel_as_signature_dicts(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def report(task_id: str) -> None:
        return None

    add.apply_async((1, 2), link=add.s(10), link_error=[report.s(), report.si("fixed")])
    [envelope] = published(app)
    embed = body(envelope).embed
    [callback] = embed["callbacks"]
    assert callback["task"] == add.name and callback["args"] == [10]
    assert [errback["task"] for errback in embed["errbacks"]] == [report.name] * 2
    assert embed["errbacks"][1]["immutable"] is True


def test_kwargs_and_non_json_values_round_trip(app: Celery) -> None:
    @app.task
    def store(when: dt.datetime, amount: Any, ident: uuid.UUID, raw: bytes, day: dt.date) -> None:
        return None

    from decimal import Decimal

    values = {
        "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
        "amount": Decimal("12.50"),
        "ident": uuid.UUID(int=5),
        "raw": b"bytes",
        "day": dt.date(2024, 5, 6),
    }
    store.apply_async(kwargs=values)
    [envelope] = published(app)
    assert body(envelope).kwargs == values
    assert envelope.headers["kwargsrepr"].startswith("{'when': datetime.datetime(2024")


def test_delay_many_publishes_a_batch(app: Celery) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    results = square.delay_many([(n,) for n in range(5)], priority=2)
    messages = published(app)
    assert [message.headers["id"] for message in messages] == [result.id for result in results]
    assert [body(message).args for message in messages] == [[n] for n in range(5)]
    assert {message.properties["priority"] for message in messages} == {2}
    assert len({result.id for result in results}) == 5


def test_send_many_from_the_app(app: Celery) -> None:
    results = app.send_many("remote.task", [((1,), {}), ((2,), {"k": "v"})], queue="remote")
    messages = published(app, "remote")
    assert [message.headers["id"] for message in messages] == [result.id for result in results]
    assert body(messages[1]).kwargs == {"k": "v"}


def test_parent_and_root_ids_inside_a_running_task(app: Celery) -> None:
    @app.task
    def child() -> None:
        return None

    @app.task(bind=True)
    def parent(self: Task[Any, Any]) -> str:
        return child.delay().id

    outer = parent.apply(task_id="outer-id")
    child_id = outer.get()
    [envelope] = published(app)
    assert envelope.headers["id"] == child_id
    assert envelope.headers["parent_id"] == "outer-id"
    assert envelope.headers["root_id"] == "outer-id"


def test_unknown_apply_async_options_become_properties(app: Celery) -> None:
    app.send_task("remote.x", (), custom_property="yes", retry=False, add_to_parent=False)
    [envelope] = published(app)
    assert envelope.properties["custom_property"] == "yes"
    assert "retry" not in envelope.properties and "add_to_parent" not in envelope.properties


# -- running in this process


def test_apply_returns_an_eager_result(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((2, 3))
    assert isinstance(result, EagerResult)
    assert result.get() == 5
    assert result.state == states.SUCCESS and result.successful()
    assert result.ready()
    assert published(app) == []


def test_apply_failure_keeps_the_exception_and_traceback(app: Celery) -> None:
    @app.task
    def fail(message: str) -> None:
        raise ValueError(message)

    result = fail.apply(("boom",))
    assert result.state == states.FAILURE
    assert result.failed()
    assert isinstance(result.result, ValueError)
    assert result.traceback is not None
    assert "ValueError: boom" in result.traceback
    assert "raise ValueError(message)" in result.traceback
    with pytest.raises(ValueError, match="boom"):
        result.get()
    assert result.get(propagate=False).args == ("boom",)
    with pytest.raises(ValueError, match="boom"):
        fail.apply(("boom",), throw=True)


def test_task_always_eager_runs_in_process(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(20, 22)
    assert isinstance(result, EagerResult)
    assert result.get() == 42
    assert add.apply_async((1, 1), countdown=10).get() == 2
    assert published(app) == []
    app.conf.task_eager_propagates = True

    @app.task
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        fail.delay()


def test_calling_the_task_runs_it_directly(app: Celery) -> None:
    seen: list[Any] = []

    @app.task(bind=True)
    def direct(self: Task[Any, Any], value: int) -> int:
        seen.append(self.request.called_directly)
        return value * 2

    assert direct(21) == 42
    assert seen == [True]
    assert published(app) == []


def test_async_result_from_the_task(app: Celery) -> None:
    @app.task
    def noop() -> None:
        return None

    result = noop.AsyncResult("some-id")
    assert result.id == "some-id"
    assert result.state == states.PENDING


def test_signature_shortcuts(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    partial = add.s(1)
    assert partial.task == add.name and partial.args == (1,)
    assert partial.immutable is False
    assert add.si(1, 2).immutable is True
    assert add.signature((1, 2), {}, countdown=3).options["countdown"] == 3
    assert add.s(1, 2).apply().get() == 3


def test_delay_many_with_options_inside_a_task_keeps_parent_ids(app: Celery) -> None:
    @app.task
    def leaf(n: int) -> int:
        return n

    @app.task
    def fan_out() -> list[str]:
        return [result.id for result in leaf.delay_many([(1,), (2,)], priority=5)]

    ids = fan_out.apply(task_id="fan-out-id").get()
    messages = published(app)
    assert [message.headers["id"] for message in messages] == ids
    assert {message.headers["parent_id"] for message in messages} == {"fan-out-id"}
    assert {message.properties["priority"] for message in messages} == {5}


def test_publishing_goes_to_the_write_url() -> None:
    app = Celery(
        "write_url",
        broker=f"memory://read-side-{next(_names)}",
        broker_write_url=f"memory://write-side-{next(_names)}",
        set_as_current=False,
    )
    app.send_task("t", ())
    reader = app.create_transport(app.conf.broker_write_url)
    assert len(reader.fetch(["celery"], 10, 0.05)) == 1
    reader.close()
    assert app.connection_for_read().fetch(["celery"], 10, 0.05) == []


def test_publish_retry_policy_and_retry_false() -> None:
    pytest.importorskip("redis")
    from celeriac.exceptions import OperationalError

    # Nothing listens on port 1: every attempt is refused at once.
    app = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    with pytest.raises(OperationalError, match="gave up after 0 retries"):
        app.send_task("t", (), retry=False)
    policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0}
    with pytest.raises(OperationalError, match="gave up after 2 retries"):
        app.send_task("t", (), retry_policy=policy)
    app.conf.task_publish_retry = False
    app.close()
    with pytest.raises(OperationalError, match="gave up after 0 retries"):
        app.send_many("t", [((), {})])


def test_args_must_be_a_sequence_and_kwargs_a_mapping(app: Celery) -> None:
    @app.task(typing=False)
    def echo(*args: Any, **kwargs: Any) -> None:
        return None

    with pytest.raises(TypeError, match="list or tuple"):
        echo.apply_async("abc")
    with pytest.raises(TypeError, match="mapping"):
        echo.apply_async((), [("k", "v")])  # type: ignore[arg-type]
    echo.apply_async([1, 2], {"k": "v"})
    [envelope] = published(app)
    assert body(envelope).args == [1, 2]


def test_a_directly_called_task_is_the_current_task(app: Celery) -> None:
    from celeriac import current_task

    @app.task
    def who() -> str:
        return str(current_task.name)

    assert who() == who.name
    assert not current_task


def test_task_and_shared_task_called_with_the_function_and_options(app: Celery) -> None:
    from celeriac import shared_task

    def double(x: int) -> int:
        return 2 * x

    task = app.task(double, name="explicit.double", max_retries=1)
    assert task.name == "explicit.double" and task.max_retries == 1
    assert app.tasks["explicit.double"] is task

    def triple(x: int) -> int:
        return 3 * x

    proxy = shared_task(triple, name="explicit.triple")
    assert proxy.name == "explicit.triple"
    assert proxy.apply((2,)).get() == 6
