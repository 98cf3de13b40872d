"""``xmap``, ``xstarmap`` and ``chunks``: one task applied to many items, in few messages.

``xmap``/``xstarmap`` send one ``celery.map``/``celery.starmap`` message that calls the task
for every item inside one worker process; ``chunks`` splits the items into a group of
``celery.starmap`` tasks of ``n`` items each. On the wire all three are plain signatures
(``subtask_type`` null, ``immutable`` true) whose ``kwargs`` hold the task and the items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celeriac._state import App
from celeriac.canvas import workflows
from celeriac.canvas.signature import Signature


class _basemap(Signature[Any]):
    task_name = ""

    def __init__(
        self, task: Mapping[str, Any], it: Iterable[Any], app: App | None = None, **options: Any
    ) -> None:
        sig = Signature.from_dict(task, app=app)
        super().__init__(
            self.task_name,
            (),
            {"task": sig, "it": list(it)},
            options=options,
            immutable=True,
            app=app or sig._app,
        )


class xmap(_basemap):
    """Call ``task(item)`` for each item, in one task (``celery.map``)."""

    task_name = "celery.map"


class xstarmap(_basemap):
    """Call ``task(*item)`` for each item, in one task (``celery.starmap``)."""

    task_name = "celery.starmap"


class chunks(Signature[Any]):
    """Split ``it`` into chunks of ``n`` items, each chunk one ``celery.starmap`` task."""

    def __init__(
        self,
        task: Mapping[str, Any],
        it: Iterable[Any],
        n: int,
        app: App | None = None,
        **options: Any,
    ) -> None:
        sig = Signature.from_dict(task, app=app)
        super().__init__(
            "celery.chunks",
            (),
            {"task": sig, "it": list(it), "n": n},
            options=options,
            immutable=True,
            app=app or sig._app,
        )

    def group(self) -> workflows.group:
        """The group of ``celery.starmap`` tasks, one per chunk."""
        task = Signature.from_dict(self.kwargs["task"], app=self._app)
        items = list(self.kwargs["it"])
        size = int(self.kwargs["n"])
        return workflows.group(
            (
                xstarmap(task, items[start : start + size], app=self._app)
                for start in range(0, len(items), size)
            ),
            app=self._app,
        )

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the chunks as a group: the result is a ``GroupResult`` of chunk lists."""
        return self.group().apply_async(args, kwargs, **{**self.options, **options})

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        return self.group().apply(args, kwargs, **{**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)
