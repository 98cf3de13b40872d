"""Workflows: ``chain``, ``group``, ``chord`` and the map helpers, in Celery's wire form.

The client expands workflows itself (as Celery's client does), so a worker only ever sees
plain task messages whose ``embed`` carries what comes next:

* chain: the first step is sent with ``chain`` = the remaining steps, reversed; every
  step's task id is assigned up front, so the caller holds the result of the last step.
* group: every member is sent with ``group_id`` and ``group_index``, in one batch.
* chord: every header member also carries ``chord`` = the body signature (its task id and
  ``chord_size`` fixed in advance); the worker that completes the header, as counted
  atomically by the result backend, sends the body with the ordered results.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas.signature import Signature
from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.result import AsyncResult, GroupResult


def _tasks_of(tasks: tuple[Any, ...]) -> list[Signature[Any]]:
    if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
        tasks = tuple(tasks[0])
    return [
        Signature.from_dict(task) if not isinstance(task, Signature) else task for task in tasks
    ]


def _app_of(sigs: Sequence[Signature[Any]], app: Celery | None) -> Celery | None:
    if app is not None:
        return app
    for sig in sigs:
        found = getattr(sig, "_app", None) or getattr(getattr(sig, "_type", None), "app", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


class chain(Signature[Any]):
    """Run tasks one after the other, each receiving the previous result."""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        steps = _tasks_of(tasks)
        super().__init__(
            "celery.chain",
            (),
            {"tasks": steps},
            options=options,
            subtask_type="chain",
            app=_app_of(steps, app),
        )

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: Celery | None) -> Signature[Any]:
        return cls(*data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> list[Signature[Any]]:
        return [Signature.from_dict(task, app=self._app) for task in self.kwargs["tasks"]]

    def _steps(self) -> list[Signature[Any]]:
        """Flatten nested chains; a group followed by a step becomes a chord."""
        flat: list[Signature[Any]] = []
        for step in self.tasks:
            if isinstance(step, chain):
                flat.extend(step._steps())
            else:
                flat.append(step.clone())
        merged: list[Signature[Any]] = []
        for step in flat:
            if merged and isinstance(merged[-1], group) and not isinstance(step, group):
                merged[-1] = chord(merged[-1], step, app=self._app)
            else:
                merged.append(step)
        return merged

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        steps = self._steps()
        if not steps:
            raise ValueError("cannot apply an empty chain")
        options = {**self.options, **options}
        root_id = options.pop("root_id", None)
        last_id = options.pop("task_id", None)
        results = []
        for position, step in enumerate(steps):
            step_id = last_id if position == len(steps) - 1 and last_id else None
            results.append(step.freeze(step_id))
        root_id = root_id or results[0].id
        for step in steps:
            step.options["root_id"] = root_id
        for previous, result in itertools.pairwise(results):
            result.parent = previous
        first, rest = steps[0], steps[1:]
        remaining = [dict(step) for step in reversed(rest)] or None
        first.apply_async(args, kwargs, chain=remaining, **options)
        return results[-1]

    def freeze(self, _id: str | None = None, group_id: str | None = None, **_: Any) -> Any:
        steps = self._steps()
        self.kwargs["tasks"] = steps
        results = [step.freeze() for step in steps[:-1]]
        last = steps[-1].freeze(_id, group_id)
        previous = None
        for result in [*results, last]:
            result.parent = previous
            previous = result
        return last

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks)


class group(Signature[Any]):
    """Run tasks in parallel; the result is a ``GroupResult`` in member order."""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        members = _tasks_of(tasks)
        super().__init__(
            "celery.group",
            (),
            {"tasks": members},
            options=options,
            subtask_type="group",
            app=_app_of(members, app),
        )

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: Celery | None) -> Signature[Any]:
        return cls(*data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> list[Signature[Any]]:
        return [Signature.from_dict(task, app=self._app) for task in self.kwargs["tasks"]]

    def __len__(self) -> int:
        return len(self.kwargs["tasks"])

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> GroupResult:
        from celeriac.result import GroupResult

        options = {**self.options, **options}
        group_id = options.pop("task_id", None) or options.pop("group_id", None)
        group_id = group_id or str(uuid.uuid4())
        options.pop("chain", None)
        app = self.app
        results: list[Any] = []
        plain: list[tuple[Signature[Any], dict[str, Any]]] = []
        for index, member in enumerate(self.tasks):
            member_options = {**options, "group_id": group_id, "group_index": index}
            if type(member) is Signature:
                results.append(member.freeze())
                plain.append((member, member_options))
            else:
                results.append(member.apply_async(args, kwargs, **member_options))
        self._send_batch(app, plain, args, kwargs)
        return GroupResult(group_id, results, app=app)

    @staticmethod
    def _send_batch(
        app: Celery,
        members: list[tuple[Signature[Any], dict[str, Any]]],
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
    ) -> None:
        if not members:
            return
        publisher = app.publisher
        envelopes, queues = [], {}
        for member, member_options in members:
            call_args, call_kwargs, merged = member._merge(args, kwargs, member_options)
            task = app.tasks.get(member.task)
            _, envelope, route = publisher.build(
                member.task, call_args, call_kwargs, task_type=task, **merged
            )
            envelopes.append(envelope)
            queues[route.queue.name] = route.queue
        publisher.publish(envelopes, list(queues.values()))

    def freeze(self, _id: str | None = None, group_id: str | None = None, **_: Any) -> Any:
        from celeriac.result import GroupResult

        group_id = _id or group_id or self.options.get("task_id") or str(uuid.uuid4())
        self.options["task_id"] = group_id
        results = []
        for index, member in enumerate(self.tasks):
            member.options.update(group_id=group_id, group_index=index)
            results.append(member.freeze(group_id=group_id))
        return GroupResult(group_id, results, app=self.app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(task) for task in self.tasks)}])"


class chord(Signature[Any]):
    """Run the header group, then the body with the list of header results."""

    def __init__(
        self, header: Any, body: Any = None, app: Celery | None = None, **options: Any
    ) -> None:
        members = _tasks_of((header,)) if not isinstance(header, group) else header.tasks
        body_sig = Signature.from_dict(body) if body is not None else None
        super().__init__(
            "celery.chord",
            (),
            {"header": members, "body": body_sig, "kwargs": {}},
            options=options,
            subtask_type="chord",
            app=_app_of([*members, *([body_sig] if body_sig else [])], app),
        )

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: Celery | None) -> Signature[Any]:
        kwargs = data["kwargs"]
        header = kwargs["header"]
        if isinstance(header, Mapping):
            header = Signature.from_dict(header, app=app)
        return cls(header, kwargs.get("body"), app=app, **(data.get("options") or {}))

    @property
    def header(self) -> list[Signature[Any]]:
        return [Signature.from_dict(task, app=self._app) for task in self.kwargs["header"]]

    @property
    def body(self) -> Signature[Any] | None:
        body = self.kwargs.get("body")
        return Signature.from_dict(body, app=self._app) if body is not None else None

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {}, body=body, **options)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        body: Any = None,
        **options: Any,
    ) -> AsyncResult:
        from celeriac.result import GroupResult

        body_sig = Signature.from_dict(body) if body is not None else self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        app = self.app
        if not app.backend.capabilities.enabled:
            raise ImproperlyConfigured(
                "a chord needs a result backend to count its header; set result_backend"
            )
        options = {**self.options, **options}
        chain_rest = options.pop("chain", None)
        if chain_rest:
            body_sig.options["chain"] = chain_rest
        group_id = options.pop("group_id", None) or str(uuid.uuid4())
        body_id = options.pop("task_id", None)
        header = self.header
        body_result = body_sig.freeze(body_id, group_id=group_id)
        body_sig["chord_size"] = len(header)
        body_sig.options["chord_size"] = len(header)
        if not header:
            return body_sig.apply_async(([],))  # type: ignore[no-any-return]
        header_group = group(header, app=app)
        header_result = header_group.apply_async(
            args, kwargs, task_id=group_id, chord=dict(body_sig), **options
        )
        body_result.parent = header_result
        assert isinstance(header_result, GroupResult)
        return body_result  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(task) for task in self.header)}], {self.body!r})"


class xmap(Signature[Any]):
    """Call ``task`` once per item, in one task (``celery.map``)."""

    def __init__(self, task: Any, it: Iterable[Any], app: Celery | None = None) -> None:
        super().__init__(
            "celery.map", (), {"task": dict(task), "it": list(it)}, immutable=True, app=app
        )


class xstarmap(Signature[Any]):
    """Call ``task(*item)`` for each item, in one task (``celery.starmap``)."""

    def __init__(self, task: Any, it: Iterable[Any], app: Celery | None = None) -> None:
        super().__init__(
            "celery.starmap", (), {"task": dict(task), "it": list(it)}, immutable=True, app=app
        )


class chunks(Signature[Any]):
    """Split ``it`` into chunks of ``n`` items, each chunk one ``celery.starmap`` task."""

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: Celery | None = None) -> None:
        super().__init__(
            "celery.chunks",
            (),
            {"task": dict(task), "it": list(it), "n": n},
            immutable=True,
            app=app,
        )

    def group(self) -> group:
        task = Signature.from_dict(self.kwargs["task"], app=self._app)
        items = list(self.kwargs["it"])
        size = int(self.kwargs["n"])
        return group(
            xstarmap(task, items[start : start + size], app=self._app)
            for start in range(0, len(items), size)
        )


Signature.TYPES.update({"chain": chain, "group": group, "chord": chord})
