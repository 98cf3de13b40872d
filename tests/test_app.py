"""The ``Celery`` app: finalize, include/imports, autodiscovery, app signals, current app,
and ``shared_task`` across apps."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, _state, shared_task
from celeriac.app import current as app_current
from celeriac.app.task import Task

Project = Callable[[dict[str, str]], Path]

_names = itertools.count()


def memory_app(main: str = "proj", **options: Any) -> Celery:
    """An app on its own in-memory broker, so tests do not see each other's messages."""
    options.setdefault("broker", f"memory://app-{next(_names)}")
    options.setdefault("backend", "memory://")
    return Celery(main, **options)


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


def test_repr_and_main() -> None:
    app = memory_app("billing")
    assert app.main == "billing"
    assert "billing" in repr(app)


def test_include_and_imports_are_imported_at_finalize(project: Project) -> None:
    project(
        {
            "inc_a.py": """
                from celeriac import current_app
                imported = True

                @current_app.task
                def from_include():
                    return "a"
            """,
            "inc_b.py": "imported = True\n",
        }
    )
    app = memory_app(include=["inc_a"])
    app.conf.imports = ["inc_b"]
    assert "inc_a" not in sys.modules and "inc_b" not in sys.modules
    app.finalize()
    assert "inc_a" in sys.modules and "inc_b" in sys.modules
    assert "inc_a.from_include" in app.tasks


def test_accessing_tasks_finalizes_the_app(project: Project) -> None:
    project(
        {
            "lazy_tasks.py": """
                from celeriac import current_app

                @current_app.task
                def t():
                    return 1
            """
        }
    )
    app = memory_app(include=["lazy_tasks"])
    assert not app.finalized
    assert "lazy_tasks.t" in app.tasks
    assert app.finalized


def test_autofinalize_false_needs_an_explicit_finalize(project: Project) -> None:
    project({"nofinal_tasks.py": "x = 1\n"})
    app = memory_app(include=["nofinal_tasks"], autofinalize=False)
    with pytest.raises(RuntimeError, match="not finalized"):
        _ = app.tasks
    assert "nofinal_tasks" not in sys.modules
    app.finalize()
    assert "nofinal_tasks" in sys.modules
    assert "celery.map" in app.tasks


def test_builtin_tasks_are_registered_at_finalize() -> None:
    app = memory_app()
    app.finalize()
    for name in ("celery.accumulate", "celery.map", "celery.starmap", "celery.chunks"):
        assert name in app.tasks
    regular = app.tasks.regular()
    assert all(not name.startswith("celery.") for name in regular)


def test_autodiscover_is_lazy_until_finalize(project: Project) -> None:
    project(
        {
            "shop/__init__.py": "",
            "shop/tasks.py": """
                from celeriac import shared_task

                @shared_task
                def checkout(order_id):
                    return order_id
            """,
            "blog/__init__.py": "",
            "blog/tasks.py": """
                from celeriac import shared_task

                @shared_task(name="blog.publish")
                def publish(post):
                    return post
            """,
            "nomodule/__init__.py": "",
        }
    )
    app = memory_app()
    app.autodiscover_tasks(["shop", "blog", "nomodule"])
    assert "shop.tasks" not in sys.modules
    app.finalize()
    assert "shop.tasks" in sys.modules
    assert "shop.tasks.checkout" in app.tasks
    assert "blog.publish" in app.tasks
    assert app.tasks["blog.publish"].apply(("hello",)).get() == "hello"


def test_autodiscover_force_imports_now(project: Project) -> None:
    project({"forced/__init__.py": "", "forced/tasks.py": "loaded = True\n"})
    app = memory_app()
    app.autodiscover_tasks(["forced"], force=True)
    assert "forced.tasks" in sys.modules
    assert not app.finalized


def test_autodiscover_with_related_name_and_callable(project: Project) -> None:
    project({"reports/__init__.py": "", "reports/jobs.py": "loaded = True\n"})
    app = memory_app()
    app.autodiscover_tasks(lambda: ["reports"], related_name="jobs")
    app.finalize()
    assert "reports.jobs" in sys.modules


def test_autodiscover_propagates_an_import_error_inside_a_tasks_module(project: Project) -> None:
    project(
        {
            "broken_pkg/__init__.py": "",
            "broken_pkg/tasks.py": "import module_that_does_not_exist_xyz\n",
        }
    )
    app = memory_app()
    with pytest.raises(ModuleNotFoundError, match="module_that_does_not_exist_xyz"):
        app.autodiscover_tasks(["broken_pkg"], force=True)


def test_autodiscover_walks_up_from_a_django_app_config_path(project: Project) -> None:
    project(
        {
            "orders/__init__.py": "",
            "orders/apps.py": "class OrdersConfig:\n    name = 'orders'\n",
            "orders/tasks.py": "x = 1\n",
        }
    )
    app = memory_app()
    app.autodiscover_tasks(["orders.apps.OrdersConfig"], force=True)
    assert "orders.tasks" in sys.modules


def test_autodiscover_of_a_missing_package_fails() -> None:
    app = memory_app()
    with pytest.raises(ModuleNotFoundError):
        app.autodiscover_tasks(["package_that_does_not_exist_xyz"], force=True)


def test_on_after_configure_and_on_after_finalize_fire_once() -> None:
    app = memory_app()
    configured: list[tuple[Any, Any]] = []
    finalized: list[Any] = []

    @app.on_after_configure.connect
    def on_configure(sender: Any, source: Any = None, **kwargs: Any) -> None:
        configured.append((sender, source))

    @app.on_after_finalize.connect
    def on_finalize(sender: Any, **kwargs: Any) -> None:
        finalized.append(sender)

    app.finalize()
    app.finalize()
    _ = app.tasks
    assert configured == [(app, app.conf)]
    assert finalized == [app]


def test_current_app_follows_the_latest_app() -> None:
    import celeriac

    first = memory_app("first")
    assert celeriac.current_app is first or celeriac.current_app == first
    second = memory_app("second")
    assert _state.get_current_app() is second
    quiet = memory_app("quiet", set_as_current=False)
    assert _state.get_current_app() is second
    quiet.set_current()
    assert _state.get_current_app() is quiet
    first.set_default()
    assert _state.get_current_app() is first


def test_current_app_imported_early_follows_later_apps() -> None:
    from celeriac import current_app

    app = memory_app("later")
    assert current_app.main == "later"
    assert current_app.conf is app.conf
    other = memory_app("even_later")
    assert current_app.main == "even_later"
    assert current_app._get_current_object() is other


def test_default_app_is_made_when_none_was_created() -> None:
    app_current._current_app = None
    default = _state.get_current_app()
    assert isinstance(default, Celery)
    assert _state.get_current_app() is default


def test_shared_task_binds_to_every_app() -> None:
    first = memory_app("first_shared")

    @shared_task
    def shared_multiply(x: int, y: int) -> int:
        return x * y

    @shared_task(name="custom.shared", bind=True, max_retries=9)
    def shared_bound(self: Task[Any, Any], x: int) -> str:
        return f"{self.name}:{x}"

    second = memory_app("second_shared")
    name = f"{__name__}.shared_multiply"
    first.finalize()
    second.finalize()
    assert name in first.tasks and name in second.tasks
    assert first.tasks[name] is not second.tasks[name]
    assert first.tasks[name].app is first and second.tasks[name].app is second
    assert first.tasks["custom.shared"].max_retries == 9
    # The proxy resolves to the current app's task.
    second.set_current()
    assert shared_multiply.app is second
    assert shared_multiply.name == name
    first.set_current()
    assert shared_multiply.app is first
    # Calling it works, directly and eagerly.
    assert shared_multiply(6, 7) == 42
    assert shared_multiply.apply((2, 3)).get() == 6
    assert shared_bound.apply((5,)).get() == "custom.shared:5"
    # An app made after the decorator ran gets it at finalize.
    third = memory_app("third_shared")
    third.finalize()
    assert name in third.tasks


def test_shared_task_publishes_through_the_current_app() -> None:
    app = memory_app("publish_shared")

    @shared_task
    def shared_echo(value: str) -> str:
        return value

    result = shared_echo.delay("hi")
    [delivery] = app.create_transport().fetch(["celery"], 10, 0.5)
    assert delivery.envelope.headers["task"] == f"{__name__}.shared_echo"
    assert delivery.envelope.headers["id"] == result.id


def test_register_class_based_task() -> None:
    app = memory_app("classes")

    class Multiply(Task[Any, Any]):
        name = "classes.multiply"

        def run(self, x: int, y: int) -> int:
            return x * y

    registered = app.register_task(Multiply)
    assert app.tasks["classes.multiply"] is registered
    assert registered.app is app
    assert registered.apply((3, 4)).get() == 12


def test_app_task_base_class_is_configurable() -> None:
    class AppWideTask(Task[Any, Any]):
        acks_late = True

    app = memory_app("task_cls", task_cls=AppWideTask)

    @app.task
    def inherits() -> None:
        return None

    assert isinstance(inherits, AppWideTask)
    assert inherits.acks_late is True
    assert app.Task is AppWideTask


def test_task_cls_by_path() -> None:
    app = memory_app("task_cls_path", task_cls="celeriac.app.task:Task")
    assert app.Task is Task


def test_send_task_by_name_needs_no_registration() -> None:
    app = memory_app("by_name")
    result = app.send_task("remote.only", (1,), {"b": 2}, queue="remote")
    [delivery] = app.create_transport().fetch(["remote"], 10, 0.5)
    assert delivery.envelope.headers["task"] == "remote.only"
    assert delivery.envelope.headers["id"] == result.id
    assert delivery.envelope.headers["argsrepr"] == "(1,)"
    assert result.task_name == "remote.only"


def test_import_modules_signal_fires_at_finalize(project: Project) -> None:
    from celeriac import signals

    project({"signal_inc.py": "x = 1\n"})
    app = memory_app(include=["signal_inc"])
    heard: list[Any] = []

    def on_import(sender: Any, **kwargs: Any) -> None:
        heard.append((sender, "signal_inc" in sys.modules))

    signals.import_modules.connect(on_import, sender=app)
    try:
        app.finalize()
    finally:
        signals.import_modules.disconnect(on_import, sender=app)
    assert heard == [(app, False)]


def test_app_as_a_context_manager_closes_its_connections() -> None:
    with memory_app("ctx", set_as_current=False) as app:
        app.send_task("t", ())
        publisher = app.publisher
        assert publisher is app.publisher
    assert app.publisher is not publisher  # made again on next use


def _store(app: Celery, task_id: str, state: str, value: Any) -> None:
    from celeriac.protocol.results import build_meta, exception_to_dict

    result = exception_to_dict(value) if isinstance(value, BaseException) else value
    app.backend.store([build_meta(task_id, state, result)])


def test_chord_unlock_sends_the_body_once_the_header_is_ready() -> None:
    name = f"chord-{next(_names)}"
    app = memory_app(broker=f"memory://{name}", backend=f"memory://{name}")
    _store(app, "h1", "SUCCESS", 1)
    _store(app, "h2", "SUCCESS", 2)
    body = app.signature("proj.collect", options={"task_id": "body-id"})
    header = [[["h1", None], None], [["h2", None], None]]  # Celery's as_tuple() form
    unlock = app.tasks["celery.chord_unlock"]
    unlock.apply(("group-id", dict(body)), {"interval": 0, "result": header}).get()
    [delivery] = app.create_transport().fetch(["celery"], 10, 0.1)
    assert delivery.envelope.headers["task"] == "proj.collect"
    assert delivery.envelope.headers["id"] == "body-id"
    from celeriac.protocol.message import decode_task_body

    assert decode_task_body(delivery.envelope, None).args == [[1, 2]]


def test_chord_unlock_fails_the_body_when_a_header_task_failed() -> None:
    from celeriac.exceptions import ChordError

    name = f"chord-{next(_names)}"
    app = memory_app(broker=f"memory://{name}", backend=f"memory://{name}")
    _store(app, "ok", "SUCCESS", 1)
    _store(app, "bad", "FAILURE", ValueError("broken member"))
    body = app.signature("proj.collect", options={"task_id": "failed-body"})
    header = [[["ok", None], None], [["bad", None], None]]
    app.tasks["celery.chord_unlock"].apply(("g", dict(body)), {"result": header}).get()
    assert app.create_transport().fetch(["celery"], 10, 0.05) == []
    failed = app.AsyncResult("failed-body")
    assert failed.state == "FAILURE"
    assert isinstance(failed.result, ChordError)
    assert "bad" in str(failed.result) and "broken member" in str(failed.result)


def test_chord_unlock_retries_while_the_header_is_pending() -> None:
    from celeriac.exceptions import MaxRetriesExceededError

    name = f"chord-{next(_names)}"
    app = memory_app(broker=f"memory://{name}", backend=f"memory://{name}")
    _store(app, "done", "SUCCESS", 1)
    body = app.signature("proj.collect")
    header = [[["done", None], None], [["still-running", None], None]]
    outcome = app.tasks["celery.chord_unlock"].apply(
        ("g", dict(body)), {"interval": 0, "max_retries": 0, "result": header}
    )
    assert isinstance(outcome.result, MaxRetriesExceededError)
    assert app.create_transport().fetch(["celery"], 10, 0.05) == []


def test_builtin_chain_task_is_not_runnable() -> None:
    app = memory_app()
    with pytest.raises(NotImplementedError):
        app.tasks["celery.chain"].apply(throw=True)
