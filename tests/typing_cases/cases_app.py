"""The app and the public API are typed for callers too."""

from __future__ import annotations

import logging
from typing import Any, reveal_type

from celeriac import AsyncResult, Celery, EagerResult, current_app, signals
from celeriac.utils.log import get_task_logger

app = Celery("typing_app", broker="memory://typing", backend="memory://")
logger: logging.Logger = get_task_logger(__name__)


@app.task(autoretry_for=(KeyError,), retry_backoff=True)
def fetch(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    return {"url": url, "timeout": timeout}


@signals.task_success.connect
def on_success(sender: Any = None, **kwargs: Any) -> None:
    logger.info("done: %s", sender)


def uses() -> None:
    reveal_type(app.send_task("remote.task", (1,), {"k": 2}))  # N: celeriac.result.AsyncResult
    reveal_type(fetch.apply(("u",)))  # N: celeriac.result.EagerResult
    reveal_type(fetch.delay_many([("a",), ("b",)]))  # N: list[celeriac.result.AsyncResult]
    reveal_type(current_app)  # N: celeriac.app.base.Celery
    fetch.delay("u", timeout=1)
    fetch.delay("u", 1.0)  # E: [call-arg]
    fetch.delay("u", timeout="slow")  # E: [arg-type]
    eager: EagerResult = fetch.apply(("u",))
    pending: AsyncResult = app.AsyncResult("some-id")
    app.conf.task_serializer = "json"
    app.config_from_object("celeryconfig", namespace="CELERY")
    app.autodiscover_tasks(["shop"])
    print(eager.id, pending.id)
