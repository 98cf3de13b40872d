"""Tasks every app registers under Celery's built-in names, so Celery clients can use them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celeriac.canvas.signature import Signature
from celeriac.exceptions import ChordError

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.app.task import Task

logger = logging.getLogger("celeriac.worker")


def register(app: Celery) -> None:
    @app.task(name="celery.accumulate")
    def accumulate(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else args

    @app.task(name="celery.map")
    def xmap(task: Any, it: Any) -> list[Any]:
        sig = Signature.from_dict(task, app=app).type
        return [sig(item) for item in it]

    @app.task(name="celery.starmap")
    def xstarmap(task: Any, it: Any) -> list[Any]:
        sig = Signature.from_dict(task, app=app).type
        return [sig(*item) for item in it]

    @app.task(name="celery.chunks")
    def chunks(task: Any, it: Any, n: int) -> None:
        from celeriac.canvas.maps import chunks as chunks_signature

        # A group of celery.starmap tasks, one per chunk, sent in one batch.
        chunks_signature(task, it, n, app=app).apply_async()

    @app.task(name="celery.chain")
    def chain(*args: Any, **kwargs: Any) -> None:
        # As in Celery: chains are expanded by whoever applies them, never run as a task.
        raise NotImplementedError("chain is not a real task")

    @app.task(name="celery.backend_cleanup")
    def backend_cleanup() -> None:
        app.backend.cleanup()

    @app.task(
        name="celery.chord_unlock",
        bind=True,
        max_retries=None,
        ignore_result=True,
        default_retry_delay=app.conf.result_chord_retry_interval,
    )
    def unlock_chord(
        self: Task[Any, Any],
        /,
        group_id: str,
        callback: Any,
        interval: float | None = None,
        max_retries: int | None = None,
        result: Any = None,
        **kwargs: Any,
    ) -> None:
        """Celery clients send this for a chord when their result backend cannot count the
        header's results itself: poll the header until it is ready (by retrying), then send
        the body with the results in order, or fail the body with a :class:`ChordError`."""
        from celeriac.app.next_steps import NextSteps
        from celeriac.result import GroupResult, allow_join_result, result_from_tuple

        body = Signature.from_dict(callback, app=app)
        header = GroupResult(
            group_id, [result_from_tuple(member, app) for member in result or ()], app=app
        )
        if not header.ready():
            wait = self.default_retry_delay if interval is None else interval
            raise self.retry(countdown=wait, max_retries=max_retries)
        try:
            with allow_join_result():
                values = header.join(timeout=app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:
            culprit = next((member for member in header.results if member.failed()), None)
            reason = f"Dependency {culprit.id} raised {exc!r}" if culprit else repr(exc)
            logger.error("Chord %s failed: %s", group_id, reason)
            NextSteps(app, self.name).fail_pending(body, ChordError(reason), None, errbacks=True)
            return
        body.delay(values)
