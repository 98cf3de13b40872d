"""The ``Celery`` application: settings, the task registry, and factories for the rest.

Creating an app does no I/O: the broker and result store are connected on first use, in
the process (and thread) that uses them, so an app can be created at import time and
forked safely.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload
from urllib.parse import urlsplit

from celeriac import signals
from celeriac._state import TaskCall
from celeriac.app import current
from celeriac.app.defaults import EMBEDDED_BROKER_URL
from celeriac.app.publish import Publisher
from celeriac.app.registry import TaskRegistry, gen_task_name
from celeriac.app.settings import Settings, settings_from_object
from celeriac.app.task import Task as BaseTask
from celeriac.backends.base import BackendOptions, ResultBackend
from celeriac.backends.registry import create_backend
from celeriac.canvas.signature import Signature
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import serializers
from celeriac.protocol.limits import Limits
from celeriac.result import AsyncResult, GroupResult, ResultBase
from celeriac.signals import Signal
from celeriac.transports.base import Transport, TransportOptions
from celeriac.transports.registry import create_transport

if TYPE_CHECKING:
    from celeriac.events import Events

P = ParamSpec("P")
R = TypeVar("R")
AnyTask = BaseTask[Any, Any]
#: ``autodiscover_tasks(packages)``: package names, a function returning them, or None for
#: Django's installed apps.
Packages = Iterable[str] | Callable[[], Iterable[str]] | None


class Celery:
    """A celeriac application, created as a Celery application is."""

    def __init__(
        self,
        main: str | None = None,
        loader: object = None,
        backend: str | None = None,
        amqp: object = None,
        events: object = None,
        log: object = None,
        control: object = None,
        set_as_current: bool = True,
        tasks: object = None,
        broker: str | None = None,
        include: Sequence[str] | None = None,
        changes: Mapping[str, Any] | None = None,
        config_source: object = None,
        fixups: object = None,
        task_cls: type[AnyTask] | str | None = None,
        autofinalize: bool = True,
        namespace: str | None = None,
        strict_typing: bool = True,
        **kwargs: Any,
    ) -> None:
        self.main = main
        self.namespace = namespace
        self.autofinalize = autofinalize
        self.strict_typing = strict_typing
        self.finalized = False
        self.configured = False
        self._oid = (os.getpid(), str(uuid.uuid4()))
        self.conf = Settings()
        self._tasks = TaskRegistry()
        self._autodiscover: list[tuple[Packages, str]] = []
        self._finalize_lock = threading.RLock()
        self._backend: tuple[int, ResultBackend] | None = None
        self._publisher: Publisher | None = None
        self.on_configure = Signal("on_configure")
        self.on_after_configure = Signal("on_after_configure")
        self.on_after_finalize = Signal("on_after_finalize")
        self.on_after_fork = Signal("on_after_fork")
        self.task_cls = self._resolve_task_cls(task_cls)
        if config_source is not None:
            self.config_from_object(config_source)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(include)
        if changes:
            self.conf.update(changes)
        for name, value in kwargs.items():
            self.conf[name] = value
        current.register_app(self)
        if set_as_current:
            current.set_current_app(self)

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    # -- configuration
    def config_from_object(
        self, obj: object, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Load settings from a module, class, mapping or ``'module:attr'`` path, now."""
        try:
            values = settings_from_object(obj, namespace or self.namespace)
        except ImproperlyConfigured:
            if silent:
                return
            raise
        self.conf.load_config(values)
        self.close()  # connections made with the old settings

    def config_from_envvar(
        self, variable_name: str, silent: bool = False, force: bool = False
    ) -> bool:
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ImproperlyConfigured(
                f"the environment variable {variable_name!r} is not set: it should name the "
                "configuration module"
            )
        self.config_from_object(module_name, silent=silent)
        return True

    def add_defaults(self, values: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> None:
        """Add default settings (a mapping, or a function returning one, called now)."""
        self.conf.add_defaults(values() if callable(values) else values)

    def _reset_connections(self) -> None:
        self._backend = None
        self._publisher = None

    def _configure(self) -> None:
        if not self.configured:
            self.configured = True
            self.on_configure.send(sender=self)
            self.on_after_configure.send(sender=self, source=self.conf)

    # -- tasks
    def _resolve_task_cls(self, task_cls: type[AnyTask] | str | None) -> type[AnyTask]:
        if isinstance(task_cls, str):
            module_name, _, attribute = task_cls.partition(":")
            found: type[AnyTask] = getattr(importlib.import_module(module_name), attribute)
            return found
        return task_cls or BaseTask

    @property
    def Task(self) -> type[AnyTask]:
        """The base task class of this app (``app.Task``)."""
        return self.task_cls

    @overload
    def task(self, fun: Callable[P, R], /) -> BaseTask[P, R]: ...

    @overload
    def task(
        self, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], BaseTask[P, R]]: ...

    @overload
    def task(
        self, *, bind: Literal[False] = False, **options: Any
    ) -> Callable[[Callable[P, R]], BaseTask[P, R]]: ...

    def task(self, *funs: Callable[..., Any], bind: bool = False, **options: Any) -> Any:
        """Decorator making a task of a function, bare (``@app.task``) or with options.

        With ``bind=True`` the task's arguments, for type checkers, are the function's
        without ``self``; a bound function that also takes ``**kwargs`` must make ``self``
        positional-only (``def run(self, /, x, **kwargs)``) for mypy to accept it.
        """
        if len(funs) == 1 and callable(funs[0]):  # @app.task, or app.task(fun, **options)
            return self._task_from_fun(funs[0], bind=bind, **options)

        def decorate(function: Callable[..., Any]) -> AnyTask:
            return self._task_from_fun(function, bind=bind, **options)

        return decorate

    def _task_from_fun(
        self,
        fun: Callable[..., Any],
        name: str | None = None,
        base: type[AnyTask] | None = None,
        bind: bool = False,
        **options: Any,
    ) -> AnyTask:
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        existing = self._tasks.get(name)
        if existing is not None and getattr(existing, "__wrapped__", None) is fun:
            return existing  # type: ignore[no-any-return]
        base = base or self.task_cls
        signature = inspect.signature(fun)
        if bind:
            parameters = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=parameters)
        attributes: dict[str, Any] = {
            "app": self,
            "name": name,
            "run": fun if bind else staticmethod(fun),
            "_bound": bind,
            "_signature": signature,
            "__wrapped__": fun,
            "__doc__": fun.__doc__,
            "__module__": fun.__module__,
            "__qualname__": fun.__qualname__,
            "abstract": False,
        }
        if "typing" not in options:
            attributes["typing"] = getattr(base, "typing", True) and self.strict_typing
        attributes.update(options)
        cls = type(fun.__name__, (base,), attributes)
        task: AnyTask = cls()
        self._tasks.register(task)
        return task

    def gen_task_name(self, name: str, module: str) -> str:
        """Name of a task without ``name=``: ``module.function`` (override to change)."""
        return gen_task_name(self, name, module)

    def register_task(self, task: AnyTask | type[AnyTask], **options: Any) -> AnyTask:
        """Register a class-based task (an instance or a ``Task`` subclass)."""
        if isinstance(task, type):
            task = task()
        if not task.name:
            type(task).name = self.gen_task_name(type(task).__name__, type(task).__module__)
        type(task).app = self
        for key, value in options.items():
            setattr(type(task), key, value)
        self._tasks.register(task)
        return task

    @property
    def tasks(self) -> TaskRegistry:
        """The task registry; reading it finalizes the app (as in Celery)."""
        if not self.finalized:
            self.finalize(auto=True)
        return self._tasks

    def finalize(self, auto: bool = False) -> None:
        """Adopt shared tasks, import ``include``/``imports`` and discovered modules."""
        with self._finalize_lock:
            if self.finalized:
                return
            if auto and not self.autofinalize:
                raise RuntimeError(
                    f"{self!r} is not finalized and autofinalize is off: call app.finalize()"
                )
            self.finalized = True
            self._configure()
            from celeriac.app import builtins

            builtins.register(self)
            for callback in current.app_finalizers():
                callback(self)
            self.import_default_modules()
            self.on_after_finalize.send(sender=self)

    def import_default_modules(self) -> None:
        """Import ``imports`` and ``include``, then the discovered task modules."""
        signals.import_modules.send(sender=self)
        for module_name in [*self.conf.imports, *self.conf.include]:
            importlib.import_module(module_name)
        pending, self._autodiscover = self._autodiscover, []
        for packages, related_name in pending:
            self._discover(packages, related_name)

    def autodiscover_tasks(
        self,
        packages: Packages = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package (at finalize, or now)."""
        if force or self.finalized:
            self._discover(packages, related_name)
        else:
            self._autodiscover.append((packages, related_name))

    def _discover(self, packages: Packages, related_name: str) -> None:
        if packages is None:
            packages = _django_installed_apps()
        elif callable(packages):
            packages = packages()
        for package in packages:
            _import_related_module(package, related_name)

    # -- connections (per process, created on first use)
    @property
    def broker_url(self) -> str:
        return str(self.conf.broker_url or self.conf.broker_write_url or EMBEDDED_BROKER_URL)

    def create_transport(
        self, url: str | None = None, *, connection_retry: bool | None = None
    ) -> Transport:
        """A new broker connection (``broker_url`` unless ``url`` is given).

        ``connection_retry=False`` makes every failure surface at once, for callers that
        retry by their own policy (publishing follows ``task_publish_retry_policy``).
        """
        conf = self.conf
        transport_options = dict(conf.broker_transport_options or {})
        if conf.broker_use_ssl and "ssl" not in transport_options:
            transport_options["ssl"] = conf.broker_use_ssl
        options = TransportOptions(
            transport_options=transport_options,
            connection_timeout=float(conf.broker_connection_timeout or 4.0),
            connection_retry=bool(
                conf.broker_connection_retry if connection_retry is None else connection_retry
            ),
            connection_max_retries=conf.broker_connection_max_retries,
            heartbeat=float(conf.broker_heartbeat or 0),
            pool_limit=int(conf.broker_pool_limit or 10),
            limits=self.limits(),
        )
        return create_transport(url or self.broker_url, options)

    def limits(self) -> Limits:
        """The bounds on one message and one result, from the ``message_max_*`` settings."""
        conf = self.conf
        return Limits(
            max_message_bytes=int(conf.message_max_size),
            max_decompressed_bytes=int(conf.message_max_decompressed_size),
            max_depth=int(conf.message_max_depth),
            max_result_bytes=int(conf.result_max_size),
        )

    def connection_for_write(
        self, url: str | None = None, *, connection_retry: bool | None = None
    ) -> Transport:
        """A connection for publishing: ``broker_write_url`` when set."""
        url = url or self.conf.broker_write_url
        return self.create_transport(url, connection_retry=connection_retry)

    def connection_for_read(
        self, url: str | None = None, *, connection_retry: bool | None = None
    ) -> Transport:
        """A connection for consuming: ``broker_read_url`` when set."""
        url = url or self.conf.broker_read_url
        return self.create_transport(url, connection_retry=connection_retry)

    @property
    def oid(self) -> str:
        """This app's id in this process: the ``reply_to`` of its task messages, the name of
        its ``rpc://`` reply queue. A forked child gets its own (as Celery's per-thread oid),
        so processes never take each other's replies."""
        pid, oid = self._oid
        if pid != os.getpid():
            oid = str(uuid.uuid4())
            self._oid = (os.getpid(), oid)
        return oid

    @property
    def publisher(self) -> Publisher:
        publisher = self._publisher
        # A forked child makes its own: the parent's stamps the parent's oid as reply_to.
        if publisher is None or publisher.reply_to != self.oid:
            self.finalize_if_needed()
            publisher = self._publisher = Publisher(self)
        return publisher

    @property
    def backend(self) -> ResultBackend:
        """This process's result backend (made on first use, again after fork)."""
        cached = self._backend
        if cached is None or cached[0] != os.getpid():
            cached = self._backend = (os.getpid(), self._create_backend())
        return cached[1]

    def _create_backend(self) -> ResultBackend:
        conf = self.conf
        accept = conf.result_accept_content or conf.accept_content
        expires = conf.result_expires
        if hasattr(expires, "total_seconds"):
            expires = expires.total_seconds()
        options = BackendOptions(
            serializer=conf.result_serializer,
            accept=serializers.content_types(accept) if accept else None,
            expires=float(expires) if expires else None,
            transport_options=conf.result_backend_transport_options or {},
            max_result_bytes=int(conf.result_max_size),
        )
        url = conf.result_backend
        if url and urlsplit(url).scheme == "rpc":
            from celeriac.backends.rpc import RPCBackend

            # Results come back as messages over this app's broker, to its own queue.
            return RPCBackend(url, options, transport_factory=self.create_transport, oid=self.oid)
        return create_backend(url, options)

    def finalize_if_needed(self) -> None:
        if not self.finalized:
            self.finalize(auto=True)

    def __enter__(self) -> Celery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's broker and result store connections (made again on use)."""
        if self._publisher is not None:
            self._publisher.close()
        if self._backend is not None and self._backend[0] == os.getpid():
            self._backend[1].close()
        self._reset_connections()

    # -- calling
    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name (it need not be registered here)."""
        publisher = self.publisher
        retry = retry_policy = None
        if "retry" in options or "retry_policy" in options:
            retry, retry_policy = options.pop("retry", None), options.pop("retry_policy", None)
        task_id, envelope, route = publisher.build(name, args, kwargs, **options)
        publisher.publish([envelope], [route.queue], retry, retry_policy)
        return AsyncResult(task_id, app=self, task_name=name)

    def send_many(
        self,
        name: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
        **options: Any,
    ) -> list[AsyncResult]:
        """Send many calls of one task in one batch: one round trip to the broker."""
        publisher = self.publisher
        retry, retry_policy = options.pop("retry", None), options.pop("retry_policy", None)
        built = publisher.build_many(name, calls, **options)
        queues = list({route.queue.name: route.queue for _, _, route in built}.values())
        publisher.publish([envelope for _, envelope, _ in built], queues, retry, retry_policy)
        return [AsyncResult(task_id, app=self, task_name=name) for task_id, _, _ in built]

    def send_batch(self, calls: Sequence[TaskCall]) -> None:
        """Send calls of any tasks in one batch: one round trip to the broker.

        The results are not made here: callers give each call its ``task_id``.
        """
        if not calls:
            return
        publisher = self.publisher
        envelopes, queues = [], {}
        for name, args, kwargs, options in calls:
            task = self.tasks.get(name)
            if task is not None and task.typing:
                task.check_arguments(args, kwargs)
            _, envelope, route = publisher.build(name, args, kwargs, task_type=task, **options)
            envelopes.append(envelope)
            queues[route.queue.name] = route.queue
        publisher.publish(envelopes, list(queues.values()))

    def signature(self, *args: Any, **kwargs: Any) -> Signature[Any]:
        kwargs.setdefault("app", self)
        return Signature(*args, **kwargs)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        return AsyncResult(task_id, app=self, **kwargs)

    def GroupResult(
        self, group_id: str, results: Iterable[ResultBase] | None = None, **kwargs: Any
    ) -> GroupResult:
        return GroupResult(group_id, results, app=self, **kwargs)

    @property
    def events(self) -> Events:
        """Event ``Dispatcher``, ``Receiver`` and ``State`` with this app's settings."""
        from celeriac.events import Events  # on first use: most processes send no events

        return Events(self)

    @property
    def control(self) -> Any:
        """Celery's remote control (revoke, inspect, rate_limit...): celeriac has none, so
        this raises, saying what needs it and what to use instead."""
        raise NotImplementedError(
            "celeriac has no remote control (app.control: revoke, inspect, ping), which "
            "AsyncResult.revoke() needs; to drop a task that has not run in time, send it "
            "with expires="
        )

    def set_current(self) -> None:
        current.set_current_app(self)

    def set_default(self) -> None:
        current.set_current_app(self)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        """Run the worker command line with this app (``app.worker_main(['worker'])``)."""
        from celeriac.cli.main import run_with_app

        run_with_app(self, list(argv or ["worker"]))

    start = worker_main


def _import_related_module(package: str, related_name: str) -> None:
    """Import ``package.related_name``; a package without that module is skipped.

    An entry that names a Django app config class (``'shop.apps.ShopConfig'``) stands for
    the app's package (the config's ``name``); an import error inside the related module
    propagates.
    """
    try:
        importlib.import_module(package)
    except ModuleNotFoundError:
        parent, _, attribute = package.rpartition(".")
        if not parent:
            raise
        app_config = getattr(importlib.import_module(parent), attribute, None)
        package = getattr(app_config, "name", None) or parent
    if not related_name:
        return
    module_name = f"{package}.{related_name}"
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the module exists but an import inside it failed
            raise


def _django_installed_apps() -> list[str]:
    try:
        from django.apps import apps  # type: ignore[import-not-found]
        from django.conf import settings  # type: ignore[import-not-found]
    except ImportError:
        return []
    if apps.ready:
        return [config.name for config in apps.get_app_configs()]
    return list(getattr(settings, "INSTALLED_APPS", []))


@overload
def shared_task(fun: Callable[P, R], /) -> BaseTask[P, R]: ...


@overload
def shared_task(
    *, bind: Literal[True], **options: Any
) -> Callable[[Callable[Concatenate[Any, P], R]], BaseTask[P, R]]: ...


@overload
def shared_task(
    *, bind: Literal[False] = False, **options: Any
) -> Callable[[Callable[P, R]], BaseTask[P, R]]: ...


def shared_task(*args: Callable[..., Any], bind: bool = False, **options: Any) -> Any:
    """Like ``app.task``, for reusable apps: the task is created in every app.

    Returns a proxy that resolves to the task of the current app when used.
    """

    def create(fun: Callable[..., Any]) -> SharedTask:
        def adopt(app: Celery) -> AnyTask:
            return app._task_from_fun(fun, bind=bind, **options)

        current.connect_on_app_finalize(adopt)
        return SharedTask(fun, options.get("name"), adopt)

    if len(args) == 1 and callable(args[0]):
        return create(args[0])
    return create


class SharedTask:
    """Stands for a shared task; attributes and calls go to the current app's task."""

    def __init__(
        self, fun: Callable[..., Any], name: str | None, adopt: Callable[[Celery], AnyTask]
    ) -> None:
        self.__wrapped__ = fun
        self._name = name
        self._adopt = adopt
        self.__doc__ = fun.__doc__
        self.__name__ = fun.__name__
        self.__module__ = fun.__module__

    def _task(self) -> AnyTask:
        app = current.get_current_app()
        name = self._name or app.gen_task_name(self.__wrapped__.__name__, self.__module__)
        task = app.tasks.get(name)
        if task is None:
            task = self._adopt(app)
        return task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._task())
