"""The cluster as events show it: workers and tasks, kept in memory, bounded.

Feed it every event (``EventReceiver(transport, {"*": state.event})``); each costs O(1).
It follows Celery's ``celery.events.state.State``:

* A worker is alive while a sign of life (an event of its own, other than
  ``worker-offline``) arrived within twice ``freq`` seconds of now, where ``freq`` is the
  heartbeat interval its events give (60 s until one says). A drift of more than 16 s
  between its clock and ours is logged once.
* A task's state follows its events (``task-received`` → RECEIVED, ``task-succeeded`` →
  SUCCESS; a custom ``task-progress`` → PROGRESS); an event that arrives late, for a state
  that comes before the task's current one, adds its details but leaves the state alone
  (a late ``task-received`` gives only the name, arguments and ids).
* ``max_workers`` and ``max_tasks`` bound what it keeps: past them, the worker or task
  whose last event is the oldest is dropped.

Values are checked as they are read: a field of the wrong type is ignored, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from celeriac import states
from celeriac.events.message import is_number

logger = logging.getLogger("celeriac.events")

#: Task event (after ``task-``) → the state it puts the task in.
TASK_EVENT_STATES = {
    "sent": states.PENDING,
    "received": states.RECEIVED,
    "started": states.STARTED,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "succeeded": states.SUCCESS,
    "revoked": states.REVOKED,
    "rejected": states.REJECTED,
}
#: A worker is taken for gone this many heartbeat intervals after its last sign of life.
HEARTBEAT_EXPIRE_FACTOR = 2.0
#: Seconds between a worker's clock and ours above which the drift is logged.
HEARTBEAT_DRIFT_MAX = 16.0
#: The only details a ``task-received`` event that arrives late may still add.
_LATE_RECEIVED_FIELDS = frozenset(
    {"name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires"}
)
_TEXT_FIELDS = (
    "name",
    "args",
    "kwargs",
    "eta",
    "expires",
    "root_id",
    "parent_id",
    "result",
    "exception",
    "traceback",
    "queue",
    "exchange",
    "routing_key",
)

Fields = Mapping[str, object]


@dataclass(slots=True, eq=False)
class Worker:
    """One worker, as its events describe it."""

    hostname: str
    pid: int | None = None
    #: Seconds between its heartbeats.
    freq: float = 60.0
    #: Tasks it was running, and had run, at its last worker event.
    active: int | None = None
    processed: int | None = None
    loadavg: list[float] | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None
    clock: int = 0
    #: When its last sign of life arrived (our clock); ``None`` once it said it went offline.
    last_heartbeat: float | None = None
    _drift_logged: bool = field(default=False, repr=False)

    @property
    def heartbeat_expires(self) -> float | None:
        """When it is taken for gone unless another sign of life arrives."""
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat + self.freq * HEARTBEAT_EXPIRE_FACTOR

    @property
    def alive(self) -> bool:
        expires = self.heartbeat_expires
        return expires is not None and time.time() < expires

    def update(self, subject: str, event: Fields, received_at: float) -> None:
        """Take in one of its ``worker-<subject>`` events."""
        self.pid = _integer(event, "pid", self.pid)
        self.freq = _number(event, "freq", self.freq) or self.freq
        self.active = _integer(event, "active", self.active)
        self.processed = _integer(event, "processed", self.processed)
        loadavg = event.get("loadavg")
        if isinstance(loadavg, list):
            loads = [float(load) for load in loadavg if is_number(load)]
            self.loadavg = loads if len(loads) == len(loadavg) else self.loadavg
        self.sw_ident = _text(event, "sw_ident", self.sw_ident)
        self.sw_ver = _text(event, "sw_ver", self.sw_ver)
        self.sw_sys = _text(event, "sw_sys", self.sw_sys)
        if subject == "offline":
            self.last_heartbeat = None
        else:
            self.seen(event, received_at)

    def seen(self, event: Fields, received_at: float) -> None:
        """A sign of life: one of its events arrived at ``received_at``."""
        self.clock = _integer(event, "clock", self.clock) or self.clock
        self.last_heartbeat = received_at
        sent_at = _number(event, "timestamp", None)
        drift = abs(received_at - sent_at) if sent_at is not None else 0.0
        if drift > HEARTBEAT_DRIFT_MAX and not self._drift_logged:
            self._drift_logged = True
            logger.warning(
                "Worker %s's clock is %.0f s off ours: clocks out of sync mislead monitors",
                self.hostname,
                drift,
            )


@dataclass(slots=True, eq=False)
class Task:
    """One task, as its events describe it (arguments and results as repr strings)."""

    uuid: str
    name: str | None = None
    state: str = states.PENDING
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    #: The hostname of the worker that last sent an event about it.
    worker: str | None = None
    #: The hostname of the client that sent it (from ``task-sent``).
    client: str | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    #: When each event happened (the sender's time, in our time zone).
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    #: Seconds it ran (from ``task-succeeded``).
    runtime: float | None = None
    #: When the event that set its state happened.
    timestamp: float | None = None
    clock: int = 0

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def update(self, subject: str, event: Fields) -> None:
        """Take in one of its ``task-<subject>`` events."""
        timestamp = _number(event, "timestamp", None)
        state = TASK_EVENT_STATES.get(subject)
        if state is not None:
            setattr(self, subject, timestamp)
        else:
            state = subject.upper()
        late = (
            state != states.RETRY
            and self.state != states.RETRY
            and states.precedence(state) > states.precedence(self.state)
        )
        fields = _LATE_RECEIVED_FIELDS if late and state == states.RECEIVED else None
        for name in _TEXT_FIELDS:
            if fields is None or name in fields:
                setattr(self, name, _text(event, name, getattr(self, name)))
        self.retries = _integer(event, "retries", self.retries)
        if fields is None:
            self.runtime = _number(event, "runtime", self.runtime)
            self.clock = _integer(event, "clock", self.clock) or self.clock
        if not late:
            self.state, self.timestamp = state, timestamp


class State:
    """Workers and tasks by the events fed to :meth:`event` (see the module docstring).

    ``workers`` (by hostname) and ``tasks`` (by id) are ordered from the least recently
    updated. :meth:`event` holds ``lock``; hold it to read them from another thread.
    """

    def __init__(self, max_workers: int = 5000, max_tasks: int = 10000) -> None:
        if max_workers < 1 or max_tasks < 1:
            raise ValueError("State keeps at least one worker and one task")
        self.max_workers = max_workers
        self.max_tasks = max_tasks
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.event_count = 0
        #: ``task-received`` events seen.
        self.task_count = 0
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"

    def event(self, event: Fields) -> Worker | Task | None:
        """Take in one event; return the worker or task it was about (``None``: neither)."""
        with self.lock:
            self.event_count += 1
            event_type = event.get("type")
            if not isinstance(event_type, str):
                return None
            group, _, subject = event_type.partition("-")
            received_at = _number(event, "local_received", None) or time.time()
            if group == "worker":
                return self._worker_event(subject, event, received_at)
            if group == "task":
                return self._task_event(subject, event, received_at)
            return None

    def alive_workers(self) -> list[Worker]:
        with self.lock:
            return [worker for worker in self.workers.values() if worker.alive]

    def clear(self) -> None:
        with self.lock:
            self.workers.clear()
            self.tasks.clear()
            self.event_count = self.task_count = 0

    def _worker_event(self, subject: str, event: Fields, received_at: float) -> Worker | None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return None
        if subject == "offline" and hostname not in self.workers:
            return None
        worker = _get_or_add(self.workers, hostname, Worker, self.max_workers)
        worker.update(subject, event, received_at)
        return worker

    def _task_event(self, subject: str, event: Fields, received_at: float) -> Task | None:
        task_id, hostname = event.get("uuid"), event.get("hostname")
        if not isinstance(task_id, str):
            return None
        task = _get_or_add(self.tasks, task_id, Task, self.max_tasks)
        if subject == "received":
            self.task_count += 1
        if isinstance(hostname, str):
            if subject == "sent":  # from the client, not a worker
                task.client = hostname
            else:
                task.worker = hostname
                _get_or_add(self.workers, hostname, Worker, self.max_workers).seen(
                    event, received_at
                )
        task.update(subject, event)
        return task


_Item = TypeVar("_Item")


def _get_or_add(
    items: OrderedDict[str, _Item], key: str, make: Callable[[str], _Item], maximum: int
) -> _Item:
    """The item at ``key``, moved to the newest end; made if missing, dropping the oldest
    beyond ``maximum``."""
    item = items.get(key)
    if item is not None:
        items.move_to_end(key)
        return item
    item = items[key] = make(key)
    if len(items) > maximum:
        items.popitem(last=False)
    return item


def _number(event: Fields, key: str, default: float | None) -> float | None:
    value = event.get(key)
    return float(value) if is_number(value) else default


def _integer(event: Fields, key: str, default: int | None) -> int | None:
    value = event.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _text(event: Fields, key: str, default: str | None) -> str | None:
    value = event.get(key, default)
    if value is None or isinstance(value, str):
        return value
    return str(value)
