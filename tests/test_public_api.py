"""The import paths Celery users change ``celery`` to ``celeriac`` in, pinned."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from celeriac.app import current as app_current

#: module → names that must be importable from it (Celery's paths, with celery → celeriac).
PUBLIC_API = {
    "celeriac": [
        "Celery",
        "shared_task",
        "Task",
        "group",
        "chain",
        "chord",
        "chunks",
        "xmap",
        "xstarmap",
        "signature",
        "subtask",
        "maybe_signature",
        "Signature",
        "AsyncResult",
        "GroupResult",
        "ResultSet",
        "EagerResult",
        "current_app",
        "current_task",
        "Queue",
        "Exchange",
        "__version__",
    ],
    "celeriac.app": ["Celery", "shared_task", "Task"],
    "celeriac.app.task": ["Task", "Context"],
    "celeriac.app.base": ["Celery", "shared_task"],
    "celeriac.canvas": ["Signature", "signature", "group", "chain", "chord", "maybe_signature"],
    "celeriac.result": [
        "AsyncResult",
        "GroupResult",
        "ResultSet",
        "EagerResult",
        "allow_join_result",
        "result_from_tuple",
    ],
    "celeriac.exceptions": [
        "CeleryError",
        "ImproperlyConfigured",
        "NotRegistered",
        "QueueNotFound",
        "Retry",
        "Ignore",
        "Reject",
        "MaxRetriesExceededError",
        "TimeoutError",
        "TaskRevokedError",
        "SoftTimeLimitExceeded",
        "TimeLimitExceeded",
        "WorkerLostError",
        "ChordError",
        "OperationalError",
        "ContentDisallowed",
        "DecodeError",
        "SecurityError",
        "TaskPredicate",
        "Terminated",
        "WorkerShutdown",
        "WorkerTerminate",
    ],
    "celeriac.states": [
        "PENDING",
        "RECEIVED",
        "STARTED",
        "SUCCESS",
        "FAILURE",
        "REVOKED",
        "REJECTED",
        "RETRY",
        "IGNORED",
        "READY_STATES",
        "UNREADY_STATES",
        "EXCEPTION_STATES",
        "PROPAGATE_STATES",
        "ALL_STATES",
        "precedence",
        "state",
    ],
    "celeriac.signals": [
        "Signal",
        "before_task_publish",
        "after_task_publish",
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_retry",
        "task_revoked",
        "worker_ready",
        "worker_process_init",
        "worker_shutdown",
        "setup_logging",
        "after_setup_task_logger",
    ],
    "celeriac.utils.log": ["get_task_logger", "get_logger"],
}


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_public_names_are_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in PUBLIC_API[module_name] if not hasattr(module, name)]
    assert missing == []


def test_package_all_lists_every_public_name() -> None:
    import celeriac

    listed = set(celeriac.__all__)
    expected = set(PUBLIC_API["celeriac"]) - {"__version__"}
    assert expected <= listed
    for name in celeriac.__all__:
        assert hasattr(celeriac, name), name


def test_the_same_objects_at_every_path() -> None:
    import celeriac
    from celeriac import canvas, result
    from celeriac.app import base, task

    assert celeriac.Celery is base.Celery
    assert celeriac.Task is task.Task
    assert celeriac.shared_task is base.shared_task
    assert celeriac.group is canvas.group and celeriac.chain is canvas.chain
    assert celeriac.AsyncResult is result.AsyncResult
    assert celeriac.EagerResult is result.EagerResult


def test_schedules_module_when_present() -> None:
    schedules = pytest.importorskip("celeriac.schedules")
    assert hasattr(schedules, "crontab") and hasattr(schedules, "schedule")


def test_exceptions_form_celerys_tree() -> None:
    from celeriac import exceptions

    assert issubclass(exceptions.ImproperlyConfigured, ImportError)
    assert issubclass(exceptions.NotRegistered, KeyError)
    assert issubclass(exceptions.QueueNotFound, KeyError)
    assert issubclass(exceptions.Retry, exceptions.TaskPredicate)
    assert issubclass(exceptions.Ignore, exceptions.TaskPredicate)
    assert issubclass(exceptions.Reject, exceptions.TaskPredicate)
    assert issubclass(exceptions.WorkerShutdown, SystemExit)
    assert issubclass(exceptions.ContentDisallowed, exceptions.SecurityError)
    for name in exceptions.__all__:
        value = getattr(exceptions, name)
        assert isinstance(value, type) and issubclass(value, BaseException), name
    assert "proj.missing" in str(exceptions.NotRegistered("proj.missing"))
    retry = exceptions.Retry(exc=ValueError("x"), when=5)
    assert "5" in str(retry) and isinstance(retry.exc, ValueError)
    reject = exceptions.Reject("reason", requeue=True)
    assert reject.requeue is True and reject.reason == "reason"


def test_get_task_logger_names_the_running_task() -> None:
    import logging

    from celeriac import Celery
    from celeriac.utils.log import TaskFormatter, get_task_logger

    logger = get_task_logger("proj.tasks.logging")
    assert logger.name == "proj.tasks.logging"
    assert logger.parent is not None and logger.parent.name == "celery.task"
    for reserved in ("celery", "celery.task"):
        with pytest.raises(RuntimeError, match="reserved"):
            get_task_logger(reserved)
    # Even under a configured project logger, task loggers report through celery.task.
    logging.getLogger("proj.sub")
    nested = get_task_logger("proj.sub.tasks")
    assert nested.parent is not None and nested.parent.name == "celery.task"
    assert get_task_logger("proj.sub.tasks") is nested
    app = Celery("logs", broker="memory://public-api", backend="memory://")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.setFormatter(TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:

        @app.task
        def logs() -> None:
            logger.info("inside")

        logs.apply(task_id="log-task-id")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    assert records == [f"{logs.name}[log-task-id]: inside", "???[???]: outside"]


def test_current_app_and_current_task_are_proxies() -> None:
    from celeriac import Celery, current_app, current_task

    app = Celery("proxied", broker="memory://public-api-proxy", backend="memory://")
    assert current_app.main == "proxied"
    assert current_app == app
    assert not current_task
    seen: list[object] = []

    @app.task
    def inspect_current() -> None:
        seen.append(current_task.name)

    inspect_current.apply()
    assert seen == [inspect_current.name]
