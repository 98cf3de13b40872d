"""Signatures: a task call as data, in the dict form Celery sends inside messages.

A signature is a ``dict`` with the keys ``task, args, kwargs, options, subtask_type,
immutable`` (plus ``chord_size`` on chord bodies), so it serializes as-is and a Celery
peer reads it. Partial arguments: applying ``sig`` with ``args`` runs the task with
``args + sig.args`` (the parent's result goes first), unless the signature is immutable.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import _state
from celeriac._state import App, RegisteredTask

if TYPE_CHECKING:
    from celeriac.result import ResultBase

R = TypeVar("R")


class Signature(dict[str, Any], Generic[R]):
    """A task name with (partial) arguments and call options."""

    #: Registered here by subclasses so that ``from_dict`` rebuilds the right class.
    TYPES: dict[str, type[Signature[Any]]] = {}
    #: The app given, if any (else the task's, else the current one: see :attr:`app`).
    _app: App | None = None
    #: The task called, once known.
    _type: RegisteredTask | None = None

    def __init__(
        self,
        task: str | RegisteredTask | Mapping[str, Any] | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        type: RegisteredTask | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: App | None = None,
        **extra_options: Any,
    ) -> None:
        self._app = app
        if isinstance(task, Mapping):
            super().__init__(task)
            return
        name = task if isinstance(task, str) or task is None else task.name
        if not isinstance(task, str) and task is not None:
            self._type = task
        elif type is not None:
            self._type = type
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    # -- dict fields as attributes
    @property
    def task(self) -> str:
        return self["task"]  # type: ignore[no-any-return]

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.get("args") or ())

    @args.setter
    def args(self, value: Sequence[Any]) -> None:
        self["args"] = tuple(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.setdefault("kwargs", {})  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        return self.setdefault("options", {})  # type: ignore[no-any-return]

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = value

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def app(self) -> App:
        if self._app is not None:
            return self._app
        if self._type is not None:
            return self._type.app
        return _state.get_current_app()

    @property
    def type(self) -> RegisteredTask:
        """The registered task this signature calls."""
        if self._type is None:
            self._type = self.app.tasks[self.task]
        return self._type

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature[Any]:
        """Rebuild a signature (or chain/group/chord) from its wire dict."""
        if isinstance(data, Signature):
            return data
        kind = data.get("subtask_type")
        target = cls.TYPES.get(kind, Signature) if kind else Signature
        return target._from_wire(dict(data), app)

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: App | None) -> Signature[Any]:
        sig: Signature[Any] = Signature(data, app=app)
        return sig

    # -- calling
    def _merge(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        merged_options = {**self.options, **(options or {})}
        if self.immutable:
            return self.args, dict(self.kwargs), merged_options
        merged_args = tuple(args or ()) + self.args
        return merged_args, {**self.kwargs, **(kwargs or {})}, merged_options

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the task; the given args are prepended to the partial args."""
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        task = self._registered()
        if task is None:  # a task only the workers know: send it by name
            return self.app.send_task(self.task, merged_args, merged_kwargs, **merged_options)
        return task.apply_async(merged_args, merged_kwargs, **merged_options)

    def _registered(self) -> RegisteredTask | None:
        if self._type is None:
            self._type = self.app.tasks.get(self.task)
        return self._type

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        merged_args, merged_kwargs, merged_options = self._merge(args, kwargs, options)
        return self.type.apply(merged_args, merged_kwargs, **merged_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, None)
        return self.type(*merged_args, **merged_kwargs)

    # -- building
    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        data = copy.deepcopy(dict(self))
        sig = type(self).from_dict(data, app=self._app)
        if not self.immutable:  # as when applied: an immutable signature keeps its arguments
            if args:
                sig["args"] = tuple(args) + sig.args
            if kwargs:
                sig["kwargs"] = {**sig.kwargs, **kwargs}
        sig.options.update(options)
        if self._type is not None:
            sig._type = self._type
        return sig

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature[R]:
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def freeze(
        self, _id: str | None = None, group_id: str | None = None, **_: object
    ) -> ResultBase:
        """Assign the task id now, so a result can be held before sending."""
        options = self.options
        if _id is not None:
            options["task_id"] = _id
        elif "task_id" not in options:
            options["task_id"] = str(uuid.uuid4())
        if group_id is not None:
            options["group_id"] = group_id
        # As Celery does: results of later workflow steps (sent by workers) still go back
        # to this client when the result backend is ``rpc://``.
        options.setdefault("reply_to", self.app.oid)
        from celeriac.result import AsyncResult

        return AsyncResult(options["task_id"], app=self.app, task_name=self.task)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    on_error = link_error

    def __or__(self, other: Any) -> Any:
        from celeriac.canvas.workflows import chain

        return chain(self, other)

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature[R]:
        clone = type(self).from_dict(copy.deepcopy(dict(self), memo))
        if self._type is not None:
            clone._type = self._type
        return clone

    def __reduce__(self) -> tuple[Callable[[Mapping[str, Any]], Signature[Any]], tuple[object]]:
        return (Signature.from_dict, (dict(self),))

    def __repr__(self) -> str:
        parts = [repr(arg) for arg in self.args]
        parts += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        prefix = "%" if self.immutable else ""
        return f"{prefix}{self.task}({', '.join(parts)})"


def signature(
    varies: str | RegisteredTask | Mapping[str, Any], *args: Any, **kwargs: Any
) -> Signature[Any]:
    """``signature('name', args, kwargs, options)`` or ``signature(dict)``."""
    if isinstance(varies, Mapping) and not args and not kwargs:
        return Signature.from_dict(varies, app=None)
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(
    value: Mapping[str, Any] | None, app: App | None = None
) -> Signature[Any] | None:
    if value is None:
        return None
    if isinstance(value, Signature):
        return value
    return Signature.from_dict(value, app=app)
