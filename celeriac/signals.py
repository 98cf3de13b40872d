"""Celery's named signals on a small dispatcher.

``signal.connect(receiver, sender=None, weak=True, dispatch_uid=None)`` and the decorator
form ``@signal.connect`` / ``@signal.connect(sender=...)`` work as in Celery. Receivers are
called as ``receiver(signal=..., sender=..., **named)``. A failing receiver is logged and
does not stop the others (``send``); ``send_robust`` returns the exceptions instead.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]


class Signal:
    """A named hook that any number of receivers can connect to."""

    def __init__(self, name: str, providing_args: Any = None) -> None:
        self.name = name
        # (key, sender or None, strong ref or weakref); rebuilt, never mutated in place, so
        # ``send`` can iterate it while a receiver connects or disconnects.
        self._receivers: list[tuple[Any, Any, Any]] = []

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @property
    def receivers(self) -> list[Receiver]:
        return [fn for fn in (self._resolve(ref) for _, _, ref in self._receivers) if fn]

    def connect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Any = None,
    ) -> Any:
        """Connect ``receiver``; without one, return a decorator."""
        if receiver is None:

            def decorate(fn: Receiver) -> Receiver:
                self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fn

            return decorate
        self._drop_dead()
        key = dispatch_uid if dispatch_uid is not None else _receiver_key(receiver)
        if any(existing == key and s is sender for existing, s, _ in self._receivers):
            return receiver
        ref: Any = receiver
        if weak:
            ref = (
                weakref.WeakMethod(receiver, self._on_collected)
                if hasattr(receiver, "__self__") and hasattr(receiver, "__func__")
                else _maybe_weakref(receiver, self._on_collected)
            )
        self._receivers = [*self._receivers, (key, sender, ref)]
        return receiver

    def disconnect(
        self, receiver: Receiver | None = None, sender: Any = None, dispatch_uid: Any = None
    ) -> bool:
        key = dispatch_uid if dispatch_uid is not None else _receiver_key(receiver)
        before = len(self._receivers)
        self._receivers = [
            entry for entry in self._receivers if not (entry[0] == key and entry[1] is sender)
        ]
        return len(self._receivers) != before

    def has_listeners(self) -> bool:
        return bool(self._receivers)

    def _on_collected(self, _ref: Any) -> None:
        # A weakly referenced receiver is gone: forget it, so its id (part of the key) can be
        # reused by a new receiver and ``has_listeners`` stays cheap and true to its name.
        self._drop_dead()

    def _drop_dead(self) -> None:
        live = [entry for entry in self._receivers if self._resolve(entry[2]) is not None]
        if len(live) != len(self._receivers):
            self._receivers = live

    def _live(self, sender: Any) -> list[Receiver]:
        found: list[Receiver] = []
        for _, wanted, ref in self._receivers:
            if wanted is not None and not _sender_matches(wanted, sender):
                continue
            fn = self._resolve(ref)
            if fn is not None:
                found.append(fn)
        return found

    @staticmethod
    def _resolve(ref: Any) -> Receiver | None:
        if isinstance(ref, weakref.ref):
            resolved: Receiver | None = ref()
            return resolved
        return ref  # type: ignore[no-any-return]

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver; a receiver's exception is logged, not raised."""
        if not self._receivers:
            return []
        responses = []
        for receiver in self._live(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                logger.exception("Signal handler %r raised: %r", receiver, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send


def _receiver_key(receiver: Any) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _maybe_weakref(receiver: Receiver, callback: Callable[[Any], None]) -> Any:
    try:
        return weakref.ref(receiver, callback)
    except TypeError:  # builtins and some callables cannot be weakly referenced
        return receiver


def _sender_matches(wanted: Any, sender: Any) -> bool:
    """A receiver connected for ``wanted`` hears ``sender``: the same object, an equal name
    (task signals send the task name or the task), or the task of that name."""
    if wanted is sender:
        return True
    if isinstance(wanted, str):
        return wanted == sender or wanted == getattr(sender, "name", None)
    if isinstance(sender, str):
        return sender == getattr(wanted, "name", None)
    return False


# -- tasks
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_internal_error = Signal("task_internal_error")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
# -- app
import_modules = Signal("import_modules")
# -- worker
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
heartbeat_sent = Signal("heartbeat_sent")
# -- logging
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
# -- beat and events
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
eventlet_pool_started = Signal("eventlet_pool_started")
eventlet_pool_preshutdown = Signal("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = Signal("eventlet_pool_postshutdown")
eventlet_pool_apply = Signal("eventlet_pool_apply")
user_preload_options = Signal("user_preload_options")

__all__ = [name for name, value in list(globals().items()) if isinstance(value, Signal)] + [
    "Signal"
]
