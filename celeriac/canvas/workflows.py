"""Workflows: ``chain``, ``group`` and ``chord``, in Celery's wire form.

The client expands workflows itself (as Celery's client does), so a worker only ever sees
plain task messages whose ``embed`` carries what comes next:

* chain: the first step is sent with ``chain`` = the remaining steps, reversed; every
  step's task id is assigned up front, so the caller holds the result of the last step.
  A group followed by another step becomes a chord (the step receives the group's list).
* group: every member is sent with ``group_id`` and ``group_index``, in one batch.
* chord: every header member also carries ``chord`` = the body signature (its task id and
  ``chord_size`` fixed in advance); the worker that completes the header, as counted
  atomically by the result backend, sends the body with the ordered results.

Options that say where a workflow's *result* goes (its group membership, the chord it
counts towards, what runs after it: :data:`RESULT_OPTIONS`) belong to the step that
produces that result: the last step of a chain, the body of a chord.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import _state
from celeriac._state import App, TaskCall
from celeriac.canvas.signature import Signature
from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.result import ResultBase

#: Options that follow a workflow's result rather than its first task.
RESULT_OPTIONS = ("group_id", "group_index", "chord", "link")


def _tasks_of(tasks: tuple[Any, ...], app: App | None = None) -> list[Signature[Any]]:
    """``f(a, b)``, ``f([a, b])`` and ``f(generator)`` all mean the tasks a and b."""
    if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
        tasks = tuple(tasks[0])
    return [Signature.from_dict(task, app=app) for task in tasks]


def _app_of(sigs: Sequence[Signature[Any]], app: App | None) -> App | None:
    if app is not None:
        return app
    for sig in sigs:
        if sig._app is not None:
            return sig._app
        if sig._type is not None:
            return sig._type.app
    return None


def _split_options(options: dict[str, Any]) -> dict[str, Any]:
    """Remove the :data:`RESULT_OPTIONS` from ``options``; return those that are set."""
    taken = {key: options.pop(key, None) for key in RESULT_OPTIONS}
    return {key: value for key, value in taken.items() if value is not None}


def _oldest(result: ResultBase) -> ResultBase:
    """The first result of a step's own lineage (a chord body's is its header group)."""
    parent = getattr(result, "parent", None)
    while parent is not None:
        result, parent = parent, getattr(parent, "parent", None)
    return result


class _TaskList(Signature[Any]):
    """A workflow over a list of signatures, sent as ``kwargs.tasks`` (chain and group)."""

    TASK_NAME = ""
    SUBTASK_TYPE = ""

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        members = _tasks_of(tasks, app)
        super().__init__(
            self.TASK_NAME,
            (),
            {"tasks": members},
            options=options,
            subtask_type=self.SUBTASK_TYPE,
            app=_app_of(members, app),
        )

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: App | None) -> Signature[Any]:
        return cls(*data["kwargs"]["tasks"], app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> list[Signature[Any]]:
        members = [Signature.from_dict(task, app=self._app) for task in self.kwargs["tasks"]]
        self.kwargs["tasks"] = members  # keep the objects, so changes to them stick
        return members


class chain(_TaskList):
    """Run tasks one after the other, each receiving the previous result."""

    TASK_NAME = "celery.chain"
    SUBTASK_TYPE = "chain"

    def _flat_steps(self) -> list[Signature[Any]]:
        """Copies of the steps, nested chains flattened."""
        flat: list[Signature[Any]] = []
        for step in self.tasks:
            if isinstance(step, chain):
                flat.extend(step._flat_steps())
            else:
                flat.append(step.clone())
        return flat

    def _prepare(self, options: dict[str, Any]) -> tuple[list[Signature[Any]], list[ResultBase]]:
        """The steps to send, with ids and options assigned, and their linked results.

        Takes out of ``options`` what goes to particular steps: ``task_id`` (the last
        step's id), ``link_error`` (every step), the result options (the last step),
        ``chain`` (steps to run after this chain, reversed, as in a message).
        """
        flat = self._flat_steps()
        if not flat:
            raise ValueError("cannot apply an empty chain")
        _take_step_options(flat, options)
        continuation = options.pop("chain", None) or ()
        flat += [Signature.from_dict(step, app=self._app) for step in reversed(continuation)]
        steps = self._with_chords(flat)
        result_options = _split_options(options)
        if result_options:
            steps[-1] = _with_result_options(steps[-1], result_options)
        results = _freeze_in_line(steps)
        root_id = options.pop("root_id", None) or _current_root_id() or _first_id(results[0])
        for step in steps:
            step.options["root_id"] = root_id
        return steps, results

    def _with_chords(self, flat: list[Signature[Any]]) -> list[Signature[Any]]:
        """The steps, a group and the step after it joined as a chord (which receives the
        group's list)."""
        steps: list[Signature[Any]] = []
        for step in flat:
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], step, app=self._app)
            else:
                steps.append(step)
        return steps

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        options = {**self.options, **options}
        steps, results = self._prepare(options)
        first, rest = steps[0], steps[1:]
        # Reversed: the worker pops the next step from the end.
        remaining = [dict(step) for step in reversed(rest)]
        first.apply_async(args, kwargs, chain=remaining or None, **options)
        return results[-1]

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the steps here, one after the other (as Celery does: a failure raises)."""
        options = {**self.options, **options}
        result: ResultBase | None = None
        for step in self._flat_steps():
            if result is None:
                step_result = step.apply(args, kwargs, **options)
            else:
                value = result.get(disable_sync_subtasks=False)
                step_result = step.apply((value,), **options)
            _oldest(step_result).parent = result
            result = step_result
        if result is None:
            raise ValueError("cannot apply an empty chain")
        return result

    def freeze(
        self, _id: str | None = None, group_id: str | None = None, **_: object
    ) -> ResultBase:
        options = dict(self.options)
        if _id is not None:
            options["task_id"] = _id
        if group_id is not None:
            options["group_id"] = group_id
        steps, results = self._prepare(options)
        # The steps now hold what was taken out of the options: do not apply it twice.
        self.kwargs["tasks"] = steps
        self.options.clear()
        self.options.update(options)
        return results[-1]

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        steps = self.tasks
        return steps[-1].link(callback) if steps else super().link(callback)

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        for step in self.tasks:  # the step that fails is the one that calls it
            step.link_error(errback)
        return errback

    on_error = link_error

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self._app, **self.options)
        return chain(*self.tasks, other, app=self._app, **self.options)

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks)


def _take_step_options(steps: list[Signature[Any]], options: dict[str, Any]) -> None:
    """Move ``task_id`` (the last step's id) and ``link_error`` (every step's) from
    ``options`` to the steps."""
    last_id = options.pop("task_id", None)
    if last_id:
        steps[-1].options["task_id"] = last_id
    errbacks = options.pop("link_error", None)
    for step in steps:
        for errback in _as_list(errbacks) if errbacks else ():
            step.link_error(errback)


def _freeze_in_line(steps: list[Signature[Any]]) -> list[ResultBase]:
    """The steps' results, each (through its oldest ancestor) the child of the one before."""
    results: list[ResultBase] = []
    for step in steps:
        result = step.freeze()
        if results:
            _oldest(result).parent = results[-1]
        results.append(result)
    return results


def _current_root_id() -> str | None:
    """Inside a running task, the root of its workflow (which a chain sent from it joins)."""
    task = _state.get_current_task()
    if task is None or task.request.called_directly:
        return None
    return task.request.root_id or task.request.id


def _first_id(result: ResultBase) -> str:
    oldest = _oldest(result)
    members = getattr(oldest, "results", None)
    if members:  # a group: the workflow's root is its first member
        return _first_id(members[0])
    return str(oldest.id)


def _as_list(
    value: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    return [value] if isinstance(value, Mapping) else list(value)


def _with_result_options(sig: Signature[Any], result_options: Mapping[str, Any]) -> Signature[Any]:
    """Give ``sig`` the options that say where its result goes (see module docstring)."""
    if isinstance(sig, group) and set(result_options) - {"link"}:
        # A group has no single result to count or to place in another group: as Celery
        # does, collect its list with ``celery.accumulate`` and let that be the result.
        collect: Signature[Any] = Signature("celery.accumulate", kwargs={"index": 0}, app=sig._app)
        sig = chord(sig, collect, app=sig._app)
    for key, value in result_options.items():
        if key == "link":
            for callback in _as_list(value):
                sig.link(callback)
        else:
            sig.options[key] = value
    return sig


class group(_TaskList):
    """Run tasks in parallel; the result is a ``GroupResult`` in member order."""

    TASK_NAME = "celery.group"
    SUBTASK_TYPE = "group"

    def __len__(self) -> int:
        return len(self.kwargs["tasks"])

    def _group_id(self, options: dict[str, Any]) -> str:
        group_id = options.pop("task_id", None) or options.pop("group_id", None)
        options.pop("group_index", None)  # a group is never a member of another
        return str(group_id or uuid.uuid4())

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        **options: Any,
    ) -> Any:
        from celeriac.result import GroupResult

        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        options = {**self.options, **options}
        if options.get("chain"):
            # Something runs after this group: it receives the list, so this is a chord.
            continuation = list(options.pop("chain"))
            body = Signature.from_dict(continuation.pop(), app=self._app)
            header = group(self.tasks, app=self._app, task_id=self._group_id(options))
            as_chord = chord(header, body, app=self._app)
            return as_chord.apply_async(args, kwargs, chain=continuation or None, **options)
        group_id = self._group_id(options)
        app = self.app
        results: list[ResultBase] = []
        plain: list[TaskCall] = []
        for index, member in enumerate(self.tasks):
            member_options = {**options, "group_id": group_id, "group_index": index}
            if type(member) is Signature:
                results.append(member.freeze())
                plain.append(TaskCall(member.task, *member._merge(args, kwargs, member_options)))
            else:
                results.append(member.apply_async(args, kwargs, **member_options))
        app.send_batch(plain)
        return GroupResult(group_id, results, app=app)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the members here, one after the other; a ``GroupResult`` of their results."""
        from celeriac.result import GroupResult

        options = {**self.options, **options}
        group_id = self._group_id(options)
        results = [member.apply(args, kwargs, **options) for member in self.tasks]
        return GroupResult(group_id, results, app=self.app)

    def freeze(
        self, _id: str | None = None, group_id: str | None = None, **_: object
    ) -> ResultBase:
        from celeriac.result import GroupResult

        group_id = _id or self.options.get("task_id") or group_id or str(uuid.uuid4())
        self.options["task_id"] = group_id
        results = []
        for index, member in enumerate(self.tasks):
            member.options.update(group_id=group_id, group_index=index)
            if isinstance(member, chain | chord):
                results.append(member.freeze(group_id=group_id))
            else:
                results.append(member.freeze())
        return GroupResult(group_id, results, app=self.app)

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        # As in Celery: linked to the first member only, immutably, so that one failing
        # member does not stop it (a callback that needs every result is a chord's body).
        members = self.tasks
        if not members:
            return super().link(callback)
        sig = Signature.from_dict(callback, app=self._app).clone()
        sig.set(immutable=True)
        return members[0].link(sig)

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        for member in self.tasks:
            member.link_error(errback)
        return errback

    on_error = link_error

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group | chain):
            return chain(self, other, app=self._app)
        return chord(self, other, app=self._app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(task) for task in self.tasks)}])"


def _flat_members(header: Any, app: App | None) -> list[Signature[Any]]:
    """A chord header's members; nested groups are flattened (each member counts once)."""
    members: list[Signature[Any]] = []
    source = header.tasks if isinstance(header, group) else _tasks_of((header,), app)
    for member in source:
        if isinstance(member, group):
            members.extend(_flat_members(member, app))
        else:
            members.append(member)
    return members


class chord(Signature[Any]):
    """Run the header group, then the body with the list of header results."""

    def __init__(
        self,
        header: Any,
        body: Mapping[str, Any] | None = None,
        app: App | None = None,
        **options: Any,
    ) -> None:
        if isinstance(header, Mapping) and not isinstance(header, Signature):
            header = Signature.from_dict(header, app=app)
        members = _flat_members(header, app)
        header_value: Any = members
        if isinstance(header, group) and header.options.get("task_id"):
            header_value = group(members, app=app, task_id=header.options["task_id"])
        body_sig = Signature.from_dict(body, app=app) if body is not None else None
        super().__init__(
            "celery.chord",
            (),
            {"header": header_value, "body": body_sig, "kwargs": {}},
            options=options,
            subtask_type="chord",
            app=_app_of([*members, *([body_sig] if body_sig else [])], app),
        )

    @classmethod
    def _from_wire(cls, data: dict[str, Any], app: App | None) -> Signature[Any]:
        kwargs = data["kwargs"]
        return cls(kwargs["header"], kwargs.get("body"), app=app, **(data.get("options") or {}))

    @property
    def header(self) -> list[Signature[Any]]:
        header = self.kwargs["header"]
        if isinstance(header, Mapping):  # a group, once frozen
            header = Signature.from_dict(header, app=self._app)
        if isinstance(header, group):
            return header.tasks
        return [Signature.from_dict(member, app=self._app) for member in header]

    tasks = header

    def _header_group(self) -> group:
        """The header as a group (with its id once frozen), kept in the signature."""
        header = self.kwargs["header"]
        if not isinstance(header, group):
            if isinstance(header, Mapping):
                header = Signature.from_dict(header, app=self._app)
            if not isinstance(header, group):
                header = group(header, app=self._app)
            self.kwargs["header"] = header
        return header

    @property
    def body(self) -> Signature[Any] | None:
        body = self.kwargs.get("body")
        if body is None:
            return None
        sig = self.kwargs["body"] = Signature.from_dict(body, app=self._app)
        return sig

    def __call__(self, body: Mapping[str, Any] | None = None, **options: Any) -> ResultBase:
        return self.apply_async((), {}, body=body, **options)

    def _prepare(
        self, body: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> tuple[group, Signature[Any], ResultBase]:
        """Header (with its id) and body (with id, size and result options), frozen.

        Takes out of ``options`` what belongs to the body: ``task_id`` (the body's id, which
        is the chord's), ``link_error``, ``chain`` (what runs after the body) and the result
        options; the rest is for the header members.
        """
        if body is not None:
            self.kwargs["body"] = Signature.from_dict(body, app=self._app)
        body_sig = self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        header = self._header_group()
        header_result = header.freeze()
        body_id = options.pop("task_id", None)
        result_options = _split_options(options)
        continuation = options.pop("chain", None)
        if continuation:
            result_options["chain"] = continuation
        errbacks = options.pop("link_error", None)
        for errback in _as_list(errbacks) if errbacks else ():
            body_sig.link_error(errback)
        body_sig = _with_result_options(body_sig, result_options)
        self.kwargs["body"] = body_sig
        body_result = body_sig.freeze(body_id)
        body_sig["chord_size"] = len(header)
        _oldest(body_result).parent = header_result
        # The body holds what was taken out of the options now: do not apply it twice.
        for key in (*RESULT_OPTIONS, "chain", "link_error"):
            self.options.pop(key, None)
        self.options["task_id"] = body_result.id
        return header, body_sig, body_result

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        route_name: str | None = None,
        body: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultBase:
        app = self.app
        if app.conf.task_always_eager:
            eager: ResultBase = self.apply(args, kwargs, body=body, **options)
            return eager
        if not app.backend.capabilities.enabled:
            raise ImproperlyConfigured(
                "a chord needs a result backend to count its header; set result_backend"
            )
        if not app.backend.capabilities.chords:
            # Refused before anything is sent, as Celery refuses: no worker could count
            # the header, so the body would never run.
            raise NotImplementedError(
                f"the result backend {app.backend.url!r} does not support chords; a group "
                "chained with a task is a chord too"
            )
        options = {**self.options, **options}
        header, body_sig, body_result = self._prepare(body, options)
        if not len(header):
            body_sig.apply_async(([],), **options)
        else:
            # Celery's workers complete a chord only against a size the client stored
            # before sending the header (Redis ``.s``); other backends count alone.
            app.backend.set_chord_size(header.options["task_id"], body_sig["chord_size"])
            header.apply_async(args, kwargs, chord=dict(body_sig), **options)
        return body_result

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        propagate: bool = True,
        **options: Any,
    ) -> Any:
        """Run the header here, then the body with the header's results."""
        body_sig = Signature.from_dict(body, app=self._app) if body is not None else self.body
        if body_sig is None:
            raise ValueError("a chord needs a body")
        header_result = group(self.header, app=self._app).apply(args, kwargs)
        values = header_result.get(propagate=propagate, disable_sync_subtasks=False)
        result = body_sig.apply((values,), **{**self.options, **options})
        _oldest(result).parent = header_result
        return result

    def freeze(
        self, _id: str | None = None, group_id: str | None = None, **_: object
    ) -> ResultBase:
        options = dict(self.options)
        if _id is not None:
            options["task_id"] = _id
        if group_id is not None:
            options["group_id"] = group_id
        _, _, body_result = self._prepare(None, options)
        return body_result

    def link(self, callback: Mapping[str, Any]) -> Mapping[str, Any]:
        body = self.body
        return body.link(callback) if body is not None else super().link(callback)

    def link_error(self, errback: Mapping[str, Any]) -> Mapping[str, Any]:
        body = self.body
        return body.link_error(errback) if body is not None else super().link_error(errback)

    on_error = link_error

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(task) for task in self.header)}], {self.body!r})"


Signature.TYPES.update({"chain": chain, "group": group, "chord": chord})
