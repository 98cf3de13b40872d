"""``app.conf``: Celery's setting names and defaults, and every way configuration arrives.

Precedence, as Celery documents it: changes made at runtime (constructor arguments,
``conf.update``, assignment) win over configuration objects (``config_from_object``), which
win over the ``CELERY_BROKER_URL``/``CELERY_RESULT_BACKEND`` environment variables, which
win over the defaults.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.app.defaults import DEFAULTS
from celeriac.exceptions import ImproperlyConfigured

Project = Callable[[dict[str, str]], Path]

#: A spot check of defaults against Celery's documented values (configuration reference).
CELERY_DEFAULTS = {
    "task_serializer": "json",
    "result_serializer": "json",
    "task_default_queue": "celery",
    "task_default_exchange_type": "direct",
    "task_default_delivery_mode": 2,
    "task_acks_late": False,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_ignore_result": False,
    "task_create_missing_queues": True,
    "task_protocol": 2,
    "task_track_started": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_compression": None,
    "task_publish_retry": True,
    "task_routes": None,
    "task_queues": None,
    "worker_prefetch_multiplier": 4,
    "worker_concurrency": None,
    "worker_max_tasks_per_child": None,
    "worker_disable_rate_limits": False,
    "worker_send_task_events": False,
    "worker_hijack_root_logger": True,
    "broker_connection_retry": True,
    "broker_connection_max_retries": 100,
    "broker_connection_timeout": 4.0,
    "broker_heartbeat": 120.0,
    "broker_pool_limit": 10,
    "broker_transport_options": {},
    "result_backend": None,
    "result_extended": False,
    "result_chord_join_timeout": 3.0,
    "result_chord_retry_interval": 1.0,
    "enable_utc": True,
    "timezone": None,
    "event_exchange": "celeryev",
    "control_exchange": "celery",
    "beat_schedule": {},
    "beat_schedule_filename": "celerybeat-schedule",
}


@pytest.fixture(autouse=True)
def _no_environment_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    monkeypatch.delenv("CELERY_BROKER_READ_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)


def test_defaults_have_celery_names_and_values() -> None:
    conf = Celery("defaults", set_as_current=False).conf
    for name, expected in CELERY_DEFAULTS.items():
        assert conf[name] == expected, name
        assert getattr(conf, name) == expected, name
    assert list(conf.accept_content) == ["json"]
    assert conf.task_publish_retry_policy["max_retries"] == 3
    # Celery documents one day, as a timedelta.
    assert conf.result_expires == dt.timedelta(days=1)


def test_mutable_defaults_are_not_shared_between_apps() -> None:
    first = Celery("first", set_as_current=False)
    second = Celery("second", set_as_current=False)
    first.conf.broker_transport_options["visibility_timeout"] = 10
    first.conf.beat_schedule["tick"] = {"task": "tick"}
    assert second.conf.broker_transport_options == {}
    assert second.conf.beat_schedule == {}
    assert DEFAULTS["broker_transport_options"] == {}


def test_attribute_and_item_access_and_update() -> None:
    app = Celery("access", set_as_current=False)
    app.conf.task_serializer = "msgpack"
    assert app.conf["task_serializer"] == "msgpack"
    app.conf["result_serializer"] = "pickle"
    assert app.conf.result_serializer == "pickle"
    app.conf.update(task_default_queue="high", worker_concurrency=3)
    app.conf.update({"task_acks_late": True})
    assert (app.conf.task_default_queue, app.conf.worker_concurrency) == ("high", 3)
    assert app.conf.task_acks_late is True
    assert app.conf.get("no_such_setting", "fallback") == "fallback"
    with pytest.raises(AttributeError, match="no_such_setting"):
        _ = app.conf.no_such_setting


def test_unknown_settings_are_kept_for_extensions() -> None:
    app = Celery("custom", set_as_current=False, my_extension_option=42)
    assert app.conf.my_extension_option == 42


def test_constructor_arguments() -> None:
    app = Celery(
        "ctor",
        broker="memory://ctor",
        backend="memory://",
        include=["some.tasks"],
        set_as_current=False,
        task_serializer="pickle",
        changes={"worker_prefetch_multiplier": 1},
    )
    assert app.main == "ctor"
    assert app.conf.broker_url == "memory://ctor"
    assert app.conf.result_backend == "memory://"
    assert list(app.conf.include) == ["some.tasks"]
    assert app.conf.task_serializer == "pickle"
    assert app.conf.worker_prefetch_multiplier == 1


def test_old_upper_case_names_are_translated() -> None:
    class OldConfig:
        BROKER_URL = "memory://old"
        CELERY_TASK_SERIALIZER = "msgpack"
        CELERYD_CONCURRENCY = 7
        CELERY_RESULT_BACKEND = "memory://"
        CELERY_ALWAYS_EAGER = True
        CELERYD_PREFETCH_MULTIPLIER = 2
        CELERY_TASK_RESULT_EXPIRES = 60
        CELERY_DEFAULT_QUEUE = "old"
        CELERY_ROUTES = {"a.*": {"queue": "a"}}
        CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
        CELERYBEAT_SCHEDULE = {"x": {}}
        ENABLE_UTC = False

    app = Celery("old", set_as_current=False)
    app.config_from_object(OldConfig)
    conf = app.conf
    assert conf.broker_url == "memory://old"
    assert conf.task_serializer == "msgpack"
    assert conf.worker_concurrency == 7
    assert conf.result_backend == "memory://"
    assert conf.task_always_eager is True
    assert conf.worker_prefetch_multiplier == 2
    assert conf.result_expires == 60
    assert conf.task_default_queue == "old"
    assert conf.task_routes == {"a.*": {"queue": "a"}}
    assert conf.accept_content == ["json", "msgpack"]
    assert conf.beat_schedule == {"x": {}}
    assert conf.enable_utc is False
    # An old name assigned at runtime lands on the new name too.
    conf["CELERY_TASK_SERIALIZER"] = "yaml"
    assert conf.task_serializer == "yaml"


def test_every_old_name_maps_to_a_known_setting() -> None:
    from celeriac.app.defaults import OLD_NAMES

    unknown = {old: new for old, new in OLD_NAMES.items() if new not in DEFAULTS}
    assert unknown == {}
    assert len(OLD_NAMES) > 100


def test_config_from_object_module_path(project: Project) -> None:
    project(
        {
            "celeryconfig.py": """
                import os
                from datetime import timedelta
                broker_url = "memory://from-module"
                task_serializer = "yaml"
                result_expires = timedelta(hours=2)
                _private = "skipped"
            """
        }
    )
    app = Celery("mod", set_as_current=False)
    app.config_from_object("celeryconfig")
    assert app.conf.broker_url == "memory://from-module"
    assert app.conf.task_serializer == "yaml"
    assert app.conf.result_expires == dt.timedelta(hours=2)
    assert "_private" not in app.conf
    assert "os" not in app.conf  # imported modules are not settings


def test_config_from_object_module_attribute_forms(project: Project) -> None:
    project(
        {
            "confpkg/__init__.py": "",
            "confpkg/settings.py": """
                class Production:
                    broker_url = "memory://production"
                    worker_concurrency = 16

                development = {"broker_url": "memory://development"}
            """,
        }
    )
    colon = Celery("colon", set_as_current=False)
    colon.config_from_object("confpkg.settings:Production")
    assert colon.conf.broker_url == "memory://production"
    assert colon.conf.worker_concurrency == 16
    dotted = Celery("dotted", set_as_current=False)
    dotted.config_from_object("confpkg.settings.development")
    assert dotted.conf.broker_url == "memory://development"


def test_config_from_object_accepts_objects_and_mappings() -> None:
    class Config:
        task_default_queue = "from-class"

    instance_source = type("Settings", (), {"task_acks_late": True})()
    app = Celery("objects", set_as_current=False)
    app.config_from_object(Config)
    assert app.conf.task_default_queue == "from-class"
    app.config_from_object(instance_source)
    assert app.conf.task_acks_late is True
    app.config_from_object({"worker_concurrency": 5})
    assert app.conf.worker_concurrency == 5
    # Loading a second object adds to the first rather than forgetting it.
    assert app.conf.task_default_queue == "from-class"


def test_django_style_settings_with_namespace(project: Project) -> None:
    project(
        {
            "django_like/__init__.py": "",
            "django_like/conf.py": """
                class LazySettings:
                    DEBUG = True
                    INSTALLED_APPS = ["shop", "blog"]
                    CELERY_BROKER_URL = "memory://django"
                    CELERY_RESULT_BACKEND = "memory://"
                    CELERY_TASK_SERIALIZER = "msgpack"
                    CELERY_WORKER_CONCURRENCY = 3
                    CELERY_TASK_ALWAYS_EAGER = True
                    CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
                    broker_url = "memory://not-namespaced"

                settings = LazySettings()
            """,
        }
    )
    app = Celery("django_project", set_as_current=False)
    app.config_from_object("django_like.conf:settings", namespace="CELERY")
    conf = app.conf
    assert conf.broker_url == "memory://django"
    assert conf.result_backend == "memory://"
    assert conf.task_serializer == "msgpack"
    assert conf.worker_concurrency == 3
    assert conf.task_always_eager is True
    assert conf.accept_content == ["json", "msgpack"]
    assert "debug" not in conf and "installed_apps" not in conf
    assert "DEBUG" not in conf


def test_namespace_given_to_the_app_applies_to_config_from_object() -> None:
    class Settings:
        MYAPP_TASK_DEFAULT_QUEUE = "namespaced"
        task_default_queue = "ignored"

    app = Celery("ns", namespace="MYAPP", set_as_current=False)
    app.config_from_object(Settings)
    assert app.conf.task_default_queue == "namespaced"


def test_bad_configuration_path_names_it() -> None:
    app = Celery("bad", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="no_such_config_module"):
        app.config_from_object("no_such_config_module")
    with pytest.raises(ImproperlyConfigured, match=r"tests\.test_settings:NoSuchAttribute"):
        app.config_from_object("tests.test_settings:NoSuchAttribute")
    # ImproperlyConfigured is an ImportError, as Celery users catch it.
    with pytest.raises(ImportError):
        app.config_from_object("no_such_config_module")


def test_silent_ignores_a_missing_configuration() -> None:
    app = Celery("silent", set_as_current=False)
    app.config_from_object("no_such_config_module", silent=True)
    assert app.conf.task_serializer == "json"
    assert app.config_from_envvar("CELERIAC_TEST_UNSET_VARIABLE", silent=True) is False


def test_import_error_inside_a_configuration_module_is_reported(project: Project) -> None:
    project(
        {
            "brokenconf/__init__.py": "",
            "brokenconf/celeryconfig.py": "import missing_dependency_xyz\nbroker_url = 'x'\n",
        }
    )
    app = Celery("broken", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="missing_dependency_xyz"):
        app.config_from_object("brokenconf.celeryconfig")


def test_config_from_envvar(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project({"envconfig.py": "task_default_queue = 'from-envvar'\n"})
    monkeypatch.setenv("CELERIAC_TEST_CONFIG_MODULE", "envconfig")
    app = Celery("envvar", set_as_current=False)
    assert app.config_from_envvar("CELERIAC_TEST_CONFIG_MODULE") is True
    assert app.conf.task_default_queue == "from-envvar"
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_TEST_UNSET_VARIABLE"):
        app.config_from_envvar("CELERIAC_TEST_UNSET_VARIABLE")


def test_environment_urls_are_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://from-env")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "memory://env-results")
    plain = Celery("env", set_as_current=False)
    assert plain.conf.broker_url == "memory://from-env"
    assert plain.conf.result_backend == "memory://env-results"
    assert plain.broker_url == "memory://from-env"
    explicit = Celery("env2", broker="memory://explicit", set_as_current=False)
    assert explicit.conf.broker_url == "memory://explicit"
    assert explicit.conf.result_backend == "memory://env-results"
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", "memory://env-write")
    assert Celery("env4", set_as_current=False).conf.broker_write_url == "memory://env-write"
    configured = Celery("env3", set_as_current=False)
    configured.config_from_object({"broker_url": "memory://configured"})
    assert configured.conf.broker_url == "memory://configured"


def test_runtime_changes_win_over_configuration_objects() -> None:
    app = Celery("precedence", broker="memory://constructor", set_as_current=False)
    app.conf.task_default_queue = "assigned"
    app.config_from_object(
        {
            "broker_url": "memory://config",
            "task_default_queue": "config",
            "task_serializer": "msgpack",
        }
    )
    assert app.conf.broker_url == "memory://constructor"
    assert app.conf.task_default_queue == "assigned"
    assert app.conf.task_serializer == "msgpack"
    app.conf.update(task_serializer="yaml")
    assert app.conf.task_serializer == "yaml"


def test_broker_url_without_configuration_is_the_embedded_broker() -> None:
    app = Celery("embedded", set_as_current=False)
    assert app.conf.broker_url is None
    assert app.broker_url.startswith("sqlite://")


def test_add_defaults_does_not_override_configuration() -> None:
    app = Celery("add_defaults", set_as_current=False)
    app.conf.task_default_queue = "explicit"
    app.add_defaults({"task_default_queue": "default", "my_plugin_setting": 1})
    app.add_defaults(lambda: {"my_lazy_setting": "lazy"})
    assert app.conf.task_default_queue == "explicit"
    assert app.conf.my_plugin_setting == 1
    assert app.conf.my_lazy_setting == "lazy"
    # Later configuration still wins over a default added this way.
    app.config_from_object({"my_plugin_setting": 2})
    assert app.conf.my_plugin_setting == 2


def test_setdefault_keeps_an_existing_default() -> None:
    conf = Celery("setdefault", set_as_current=False).conf
    assert conf.setdefault("task_serializer", "pickle") == "json"
    assert conf.task_serializer == "json"
    assert conf.setdefault("brand_new_setting", 5) == 5


def test_changes_lists_only_what_was_configured() -> None:
    app = Celery("changes", broker="memory://changes", set_as_current=False)
    app.config_from_object({"worker_concurrency": 2})
    changes = app.conf.changes()
    assert changes == {"broker_url": "memory://changes", "worker_concurrency": 2}
    assert app.conf.is_set("worker_concurrency")
    assert not app.conf.is_set("task_serializer")


def test_settings_survive_pickling_and_copying() -> None:
    import copy
    import pickle

    app = Celery("pickled", broker="memory://pickled", set_as_current=False)
    app.config_from_object({"task_serializer": "msgpack"})
    for clone in (pickle.loads(pickle.dumps(app.conf)), copy.deepcopy(app.conf)):
        assert clone.broker_url == "memory://pickled"
        assert clone.task_serializer == "msgpack"
        assert clone.changes() == app.conf.changes()
        clone.task_acks_late = True
        assert clone.task_acks_late is True and app.conf.task_acks_late is False
