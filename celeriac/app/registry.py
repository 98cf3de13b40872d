"""The registry of an app's tasks: name → task instance."""

from __future__ import annotations

from typing import Any

from celeriac.exceptions import NotRegistered


class TaskRegistry(dict[str, Any]):
    """``app.tasks``. A missing name raises :class:`NotRegistered` (a ``KeyError``)."""

    def __missing__(self, key: str) -> Any:
        raise NotRegistered(key)

    def register(self, task: Any) -> None:
        self[task.name] = task

    def unregister(self, name: str) -> None:
        try:
            self.pop(getattr(name, "name", name))
        except KeyError:
            raise NotRegistered(name) from None

    def regular(self) -> dict[str, Any]:
        return {name: task for name, task in self.items() if not name.startswith("celery.")}


def gen_task_name(app: Any, name: str, module_name: str) -> str:
    """``module.function``; ``__main__`` is replaced by the app's main name, as in Celery."""
    if module_name == "__main__" and getattr(app, "main", None):
        module_name = app.main
    return f"{module_name}.{name}"
