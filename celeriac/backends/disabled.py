"""The backend used when ``result_backend`` is not set: results are not stored.

Sending tasks works; reading a result fails with an error that says how to configure a
backend. The error is a :class:`NotImplementedError`, as in Celery, so existing
``except NotImplementedError`` code keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from celeriac.backends.base import (
    BackendCapabilities,
    BackendOptions,
    ChordMember,
    ResultBackend,
)
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.results import Meta

NO_BACKEND_MESSAGE = (
    "No result backend is configured. Set result_backend (for example "
    "Celery(..., backend='db+sqlite:///results.db') or 'redis://localhost/0') "
    "to store and read task results."
)


class ResultBackendDisabled(ImproperlyConfigured, NotImplementedError):
    """A result was read, waited for or saved while no result backend is configured."""


class DisabledBackend(ResultBackend):
    capabilities = BackendCapabilities(enabled=False)

    def __init__(self, url: str = "disabled://", options: BackendOptions | None = None) -> None:
        self.url = url
        self.options = options or BackendOptions()

    @staticmethod
    def _refuse() -> NoReturn:
        raise ResultBackendDisabled(NO_BACKEND_MESSAGE)

    def store(self, metas: Sequence[Meta]) -> None:
        """Results are dropped: nothing could read them."""

    def get(self, task_ids: Sequence[str]) -> list[Meta | None]:
        self._refuse()

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        self._refuse()

    def forget(self, task_ids: Sequence[str]) -> None:
        """Nothing is stored, so nothing to forget."""

    def save_group(self, group_id: str, value: Any) -> None:
        self._refuse()

    def get_group(self, group_id: str) -> Any | None:
        self._refuse()

    def forget_group(self, group_id: str) -> None:
        """Nothing is stored, so nothing to forget."""

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        self._refuse()

    def close(self) -> None:
        """Nothing to release."""
