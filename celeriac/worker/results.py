"""Result metas of the tasks a worker process runs, gathered so a batch costs one backend call."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from celeriac.app.trace import store_results

if TYPE_CHECKING:
    from celeriac.backends.base import ResultBackend
    from celeriac.protocol.results import Meta


class BatchingSink:
    """Collects result metas and writes them in batches (``flush``).

    With ``max_delay``, a thread stores what has been pending that long, so a quick task's
    result is not held back by a slow task that runs after it in the same batch. Batches are
    stored one at a time, in the order their metas came (STARTED never lands after SUCCESS).
    Storing never raises into the worker (see :func:`~celeriac.app.trace.store_results`).
    """

    def __init__(self, backend: ResultBackend, max_delay: float | None = None) -> None:
        self.backend = backend
        self.pending: list[Meta] = []
        self._added = threading.Condition()  # guards pending and since
        self._storing = threading.Lock()  # one store at a time keeps them in order
        self._since = 0.0  # when pending last became non-empty
        if max_delay is not None:
            threading.Thread(
                target=self._store_late, args=(max_delay,), name="celeriac-results", daemon=True
            ).start()

    def add(self, meta: Meta) -> None:
        with self._added:
            self.pending.append(meta)
            if len(self.pending) == 1:
                self._since = time.monotonic()
                self._added.notify()

    def flush(self) -> None:
        if not self.pending:
            return
        with self._storing:
            with self._added:
                pending, self.pending = self.pending, []
            if pending:
                store_results(self.backend, pending)

    def _store_late(self, max_delay: float) -> None:
        while True:
            with self._added:
                while not self.pending:
                    self._added.wait()
                since = self._since
            time.sleep(max(0.0, since + max_delay - time.monotonic()))
            if self.pending and self._since == since:  # not flushed meanwhile
                self.flush()
