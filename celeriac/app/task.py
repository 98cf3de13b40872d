"""The ``Task`` class, at Celery's import path (``celery.app.task``).

A task is a class made from a function by ``@app.task``; its single instance is what the
decorator returns and what ``app.tasks[name]`` holds. Options (``max_retries``,
``acks_late``, ``rate_limit``...) are class attributes, so ``base=`` classes and decorator
options combine the way Celery users expect.

``Task`` is generic over the function's parameters and return type: ``add.delay(1, "x")``
and ``add.s(1)`` are checked by mypy against ``def add(x: int, y: int) -> int``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, ParamSpec, TypeVar

from celeriac import _state, states
from celeriac.canvas.signature import Signature
from celeriac.exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")
#: ``link`` and ``link_error``: a signature, or a list of them.
Links = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Context:
    """``task.request``: what the running task knows about its own call.

    Every header of the message is copied in, so custom headers given with
    ``apply_async(headers=...)`` are attributes too, as in Celery.
    """

    id: str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = {}
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    is_eager: bool = False
    headers: Mapping[str, Any] | None = None
    delivery_info: Mapping[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Mapping[str, Any] | None = None
    chain: list[Any] | None = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    timelimit: Sequence[float | None] | None = None
    origin: str | None = None
    hostname: str | None = None
    ignore_result: bool = False
    called_directly: bool = True
    shadow: str | None = None
    priority: int | None = None
    task: str | None = None
    stamps: Mapping[str, Any] | None = None
    replaced_task_nesting: int = 0
    properties: Mapping[str, Any] | None = None

    def __init__(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if values:
            self.__dict__.update(values)
        if kwargs:
            self.__dict__.update(kwargs)

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if values:
            self.__dict__.update(values)
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"


_DIRECT_CALL = Context(called_directly=True)
_SEQUENCE_TYPES = (list, tuple)


class Task(Generic[P, R]):
    """A task type. Subclass it (``base=``) to share options and hooks between tasks."""

    #: Set on the class made for each task.
    name: ClassVar[str] = ""
    app: ClassVar[Celery]  # assigned when the task is bound to an app
    #: Check call arguments against the function signature in the caller.
    typing: ClassVar[bool] = True
    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float] = 180
    rate_limit: ClassVar[str | float | None] = None
    ignore_result: ClassVar[bool | None] = None
    store_errors_even_if_ignored: ClassVar[bool | None] = None
    serializer: ClassVar[str | None] = None
    compression: ClassVar[str | None] = None
    time_limit: ClassVar[float | None] = None
    soft_time_limit: ClassVar[float | None] = None
    acks_late: ClassVar[bool | None] = None
    acks_on_failure_or_timeout: ClassVar[bool | None] = None
    reject_on_worker_lost: ClassVar[bool | None] = None
    track_started: ClassVar[bool | None] = None
    priority: ClassVar[int | None] = None
    expires: ClassVar[float | dt.datetime | None] = None
    queue: ClassVar[str | None] = None
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: ClassVar[bool | float] = False
    retry_backoff_max: ClassVar[float] = 600
    retry_jitter: ClassVar[bool] = True
    throws: ClassVar[tuple[type[BaseException], ...]] = ()
    trail: ClassVar[bool] = True
    send_events: ClassVar[bool] = True
    store_eager_result: ClassVar[bool | None] = None
    resultrepr_maxsize: ClassVar[int] = 1024
    abstract: ClassVar[bool] = True
    #: The user's function (``run`` calls it).
    __wrapped__: ClassVar[Callable[..., Any] | None] = None
    #: Request of the call being executed in this context (per task type).
    _request_var: ClassVar[contextvars.ContextVar[Context]]
    _signature: ClassVar[inspect.Signature | None] = None
    _positional_bounds: ClassVar[tuple[float, float] | None] = None
    _bound: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._request_var = contextvars.ContextVar(f"request:{cls.__qualname__}")

    # -- execution
    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task in this process, as a plain function call."""
        if self._request_var.get(None) is not None:
            # Already executing (the worker set the request): just run.
            return self.run(*args, **kwargs)
        token = self._request_var.set(Context(args=args, kwargs=kwargs, called_directly=True))
        # As in Celery, a task called directly is ``current_task`` while it runs.
        task_token = _state.current_task_var.set(self)
        try:
            return self.run(*args, **kwargs)
        finally:
            _state.current_task_var.reset(task_token)
            self._request_var.reset(token)

    @property
    def request(self) -> Context:
        return self._request_var.get(_DIRECT_CALL)

    def push_request(self, **values: Any) -> contextvars.Token[Context]:
        return self._request_var.set(Context(values))

    def pop_request(self, token: contextvars.Token[Context]) -> None:
        self._request_var.reset(token)

    # -- calling
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Send the task with these arguments (``apply_async`` with defaults)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: object = None,
        link: Links = None,
        link_error: Links = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task; see Celery's ``apply_async`` for the options."""
        if args is not None and not isinstance(args, _SEQUENCE_TYPES):
            raise TypeError(f"{self.name}: task args must be a list or tuple, not {args!r}")
        if kwargs is not None and type(kwargs) is not dict and not isinstance(kwargs, Mapping):
            raise TypeError(f"{self.name}: task keyword arguments must be a mapping")
        if self.typing:
            self.check_arguments(args or (), kwargs or {})
        app = self.app
        if link is not None:
            options["link"] = link
        if link_error is not None:
            options["link_error"] = link_error
        if shadow is not None:
            options["shadow"] = shadow
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=task_id, **options)
        return app.send_task(self.name, args, kwargs, task_id=task_id, task_type=self, **options)

    def delay_many(self, calls: Iterable[Sequence[Any]], **options: Any) -> list[AsyncResult]:
        """Send one task per tuple of positional arguments, in one batch (one round trip)."""
        arg_list = [tuple(args) for args in calls]
        if self.typing:
            for args in arg_list:
                self.check_arguments(args, {})
        return self.app.send_many(
            self.name, [(args, {}) for args in arg_list], task_type=self, **options
        )

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError in the caller when the arguments do not fit the function."""
        signature = self._signature
        if signature is None:
            return
        if not kwargs:
            # Fast path for positional calls: compare counts, computed once per task type.
            bounds = type(self)._positional_bounds
            if bounds is None:
                bounds = type(self)._positional_bounds = _positional_bounds(signature)
            low, high = bounds
            if low <= len(args) <= high:
                return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        link: Links = None,
        link_error: Links = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now; return an ``EagerResult``."""
        from celeriac.app.trace import apply_eagerly

        return apply_eagerly(
            self,
            tuple(args or ()),
            dict(kwargs or {}),
            task_id=task_id or str(uuid.uuid4()),
            retries=retries or 0,
            throw=throw,
            link=link,
            link_error=link_error,
            options=options,
        )

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *starargs: Any,
        **starkwargs: Any,
    ) -> Signature[R]:
        starkwargs.setdefault("app", self.app)
        return Signature(self, args, kwargs, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature with partial arguments: ``add.s(2)`` then ``(add.s(2) | mul.s(3))``.

        Typed loosely on purpose: the missing arguments come later (from a parent's result
        or at apply time), so only the return type is known here. ``si`` is checked fully.
        """
        return Signature(self, args, kwargs, app=self.app)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable signature: the parent's result is not passed to it."""
        return Signature(self, args, kwargs, immutable=True, app=self.app)

    def map(self, it: Iterable[Any]) -> Signature[list[R]]:
        """``celery.map``: one task that calls this task for each item."""
        from celeriac.canvas.maps import xmap

        return xmap(self.signature(), it, app=self.app)

    def starmap(self, it: Iterable[Sequence[Any]]) -> Signature[list[R]]:
        """``celery.starmap``: one task that calls this task with each tuple of arguments."""
        from celeriac.canvas.maps import xstarmap

        return xstarmap(self.signature(), it, app=self.app)

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> Signature[Any]:
        """A group of ``celery.starmap`` tasks over ``it``, ``n`` argument tuples each."""
        from celeriac.canvas.maps import chunks

        return chunks(self.signature(), it, n, app=self.app)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        from celeriac.result import AsyncResult

        return AsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    # -- inside a running task
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: dt.datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this call again (same task id, ``retries + 1``) and raise :class:`Retry`."""
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc or Retry("Task can be retried", None)
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        if countdown is None and eta is None:
            countdown = self.default_retry_delay
        when = eta or countdown
        sig = self.signature_from_request(
            request,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            retries=request.retries + 1,
            **options,
        )
        if request.is_eager:
            sig.apply().get()
        else:
            sig.apply_async()
        retry = Retry(exc=exc, when=when, sig=sig)
        if throw:
            raise retry
        return retry

    def signature_from_request(
        self,
        request: Context | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **extra_options: Any,
    ) -> Signature[R]:
        request = request or self.request
        options: dict[str, Any] = {
            "task_id": request.id,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "group_id": request.group,
            "group_index": request.group_index,
            "chord": request.chord,
            "chain": request.chain,
            "root_id": request.root_id,
            "parent_id": request.parent_id,
            "priority": request.priority,
            "shadow": request.shadow,
            # A retry answers the same client (rpc:// replies go to it), as in Celery.
            "reply_to": request.reply_to,
        }
        delivery = request.delivery_info or {}
        if delivery.get("routing_key"):
            options["routing_key"] = delivery["routing_key"]
            options["exchange"] = delivery.get("exchange", "")
        if request.timelimit:
            options["time_limit"], options["soft_time_limit"] = request.timelimit
        options.update(extra_options)
        return self.signature(
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            **{key: value for key, value in options.items() if value is not None},
        )

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: object = None,
        **kwargs: Any,
    ) -> None:
        """Store a custom state (for progress reporting) for this or another task."""
        from celeriac.protocol.results import build_meta

        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state needs a task id outside of a running task")
        backend = self.app.backend
        reply_to = self.request.reply_to
        # rpc:// sends the state to the reply queue of the client that sent this task.
        needs_reply_to = backend.capabilities.needs_reply_to
        extra = {"reply_to": reply_to} if reply_to and needs_reply_to else None
        backend.store([build_meta(task_id, state or states.PENDING, meta, extra=extra)])

    def replace(self, sig: Signature[Any]) -> NoReturn:
        """Replace this task with ``sig``; callbacks and chain move to the replacement."""
        from celeriac.canvas.workflows import chord, group
        from celeriac.exceptions import Ignore

        request = self.request
        sig = sig.clone()
        if isinstance(sig, group):
            # A group has no single result: its list becomes this task's, as in Celery.
            sig = chord(sig, Signature("celery.accumulate", kwargs={"index": 0}, app=self.app))
        sig.set(
            task_id=request.id,
            root_id=request.root_id,
            parent_id=request.parent_id,
            group_id=request.group,
            group_index=request.group_index,
            chord=request.chord,
            chain=request.chain,
            replaced_task_nesting=request.replaced_task_nesting + 1,
        )
        for callback in request.callbacks or ():
            sig.link(callback)
        for errback in request.errbacks or ():
            sig.link_error(errback)
        sig.apply_async()
        raise Ignore("Replaced by new task")

    def send_event(self, type_: str, **fields: Any) -> None:
        """Celery's task events: celeriac sends none, so a task written for Celery may call
        this and the event is dropped."""

    # -- hooks a base class may override
    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called before the task runs."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called after the task succeeded."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called when the task is to be retried."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called when the task failed."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: Any,
    ) -> None:
        """Called after the task returned, whatever its state."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main if hasattr(self, 'app') else '?'}>"

    def __reduce__(self) -> tuple[Callable[[str], _state.RegisteredTask], tuple[str]]:
        # Tasks travel (e.g. in pickled args) by name and are looked up in the current app.
        return (_task_by_name, (self.name,))


def _positional_bounds(signature: inspect.Signature) -> tuple[float, float]:
    """How many positional arguments a call without keywords may have: (min, max)."""
    low = high = 0.0
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            high = float("inf")
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            high += 1
            if parameter.default is parameter.empty:
                low += 1
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            return (float("inf"), -1.0)  # a required keyword-only argument: always bind()
    return low, high


def _task_by_name(name: str) -> _state.RegisteredTask:
    return _state.get_current_app().tasks[name]
