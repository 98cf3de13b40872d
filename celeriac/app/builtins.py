"""Tasks every app registers under Celery's built-in names, so Celery clients can use them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.canvas.signature import Signature

if TYPE_CHECKING:
    from celeriac.app.base import Celery


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
        sig = Signature.from_dict(task, app=app)
        items = list(it)
        for start in range(0, len(items), n):
            app.send_task("celery.starmap", (dict(sig), items[start : start + n]))

    @app.task(name="celery.backend_cleanup")
    def backend_cleanup() -> None:
        cleanup = getattr(app.backend, "cleanup", None)
        if cleanup is not None:
            cleanup()
