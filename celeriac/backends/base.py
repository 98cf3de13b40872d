"""The result-backend interface: store, read, wait for and forget task results.

A backend stores a :class:`~celeriac.protocol.results.Meta` per task id, in
the format Celery peers read. Every method takes a batch. All implementations pass the same
conformance suite, ``tests/conformance/test_backend.py``.

Contract, shared by every implementation:

* ``store`` writes metas (each has ``task_id``); a stored ``SUCCESS`` is never overwritten
  (duplicate deliveries must not undo a result). Results expire after ``expires`` seconds
  when the store supports expiry (``None``: never).
* ``get`` returns, per id in order, the stored meta or ``None`` (the caller reports PENDING).
* ``wait`` returns the metas once every id has a ready state (SUCCESS, FAILURE, REVOKED),
  or raises :class:`celeriac.exceptions.TimeoutError` after ``timeout`` seconds. Backends
  that can be notified of new results do not poll; the others poll every ``interval``
  seconds.
* ``chord_part_return`` records that one member of a chord's header group reached a ready
  state and returns the ordered member metas exactly once, to the caller whose call
  completed the group; every other call returns ``None``. Duplicate calls for the same
  member are counted once.
* An instance is used by the process that created it: after a fork the child creates its own.

Implementations subclass :class:`ResultBackend`, which gives them the methods that only
some stores need (``declare_reply_queue``, ``set_chord_size``, ``cleanup``) as no-ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, runtime_checkable

from celeriac.protocol.results import Meta


class ChordMember(TypedDict):
    """One header member's result as ``chord_part_return`` hands it back: Redis keeps no
    more of it (Celery's format), other stores give the whole :class:`Meta`."""

    task_id: str
    status: str
    result: Any


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings a backend is created with (from the app's ``result_*`` settings)."""

    serializer: str = "json"
    #: MIME types the backend may decode (``result_accept_content``); ``None``: any.
    accept: frozenset[str] | None = None
    #: Seconds after which results are dropped; ``None`` keeps them.
    expires: float | None = 86400.0
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    #: A stored result larger than this (serialized) is stored as a FAILURE that says so.
    max_result_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    #: Results are stored at all (the disabled backend says no).
    enabled: bool = True
    #: Other processes (and machines, for network stores) see the results.
    cross_process: bool = False
    #: Results are replies to the client that sent the task (``rpc://``): the worker puts
    #: the request's ``reply_to`` under ``"reply_to"`` in each meta it stores, and only that
    #: client reads the result, taking it off the broker on first read.
    needs_reply_to: bool = False
    #: ``chord_part_return`` works, so chords can join.
    chords: bool = True


@runtime_checkable
class ResultBackend(Protocol):
    """A result store. See the module docstring for the contract."""

    url: str
    capabilities: BackendCapabilities

    def store(self, metas: Sequence[Meta]) -> None:
        """Write each meta under its ``task_id``; never overwrite a stored SUCCESS."""

    def get(self, task_ids: Sequence[str]) -> list[Meta | None]:
        """The stored metas, in order; ``None`` where nothing is stored."""
        ...

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        """Block until every id has a ready state; return their metas in order."""
        ...

    def forget(self, task_ids: Sequence[str]) -> None:
        """Delete the stored results."""

    def save_group(self, group_id: str, value: Any) -> None:
        """Store a group's result tuple (``GroupResult.save``)."""

    def get_group(self, group_id: str) -> Any | None:
        """The stored group value, or ``None``."""
        ...

    def forget_group(self, group_id: str) -> None:
        """Delete a stored group."""

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        """Count one ready member of a chord header; see the module docstring."""
        ...

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Record a chord's header size before the header is sent.

        Only for stores whose Celery workers count a chord against a size the client
        wrote (Redis); the others count against the size each member carries.
        """
        return None

    def declare_reply_queue(self) -> None:
        """Make sure replies to this client have a queue before its first task is sent.

        Only for backends whose results are replies (``rpc://``): RabbitMQ drops a
        message routed to no queue.
        """
        return None

    def cleanup(self) -> None:
        """Delete expired results now (Celery's ``celery.backend_cleanup`` task).

        Only for stores that do not expire values by themselves.
        """
        return None

    def close(self) -> None:
        """Release connections."""
