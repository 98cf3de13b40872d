"""The benchmark's task module, loaded by celeriac *or* Celery (the same code runs on both).

``BENCH_SYSTEM`` picks the library (``celery``; any other system is celeriac, in the build
its interpreter has installed); ``BENCH_BROKER`` and ``BENCH_BACKEND`` the broker and result
backend URLs; ``BENCH_BROKER_OPTIONS`` (JSON) the ``broker_transport_options``;
``BENCH_RESULT_EXPIRES`` (seconds, optional) ``result_expires``. The runner
sets them for its client processes and for the worker it starts with ``-A bench_tasks``.
"""

from __future__ import annotations

import json
import os
import time

if os.environ.get("BENCH_SYSTEM", "celeriac") == "celery":
    from celery import Celery
else:
    from celeriac import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_BROKER") or None,
    backend=os.environ.get("BENCH_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("BENCH_BROKER_OPTIONS") or "{}")
if os.environ.get("BENCH_RESULT_EXPIRES"):  # seconds; the soak keeps its result store small
    app.conf.result_expires = float(os.environ["BENCH_RESULT_EXPIRES"])
# Hide Celery's "broker_connection_retry" start-up deprecation warning; no effect on celeriac.
app.conf.broker_connection_retry_on_startup = True


@app.task
def noop() -> None:
    """The task under measurement: nothing but the framework's own work."""


@app.task(ignore_result=True)
def noop_quiet() -> None:
    """``noop`` that stores no result."""


def _write_marker(path: str) -> None:
    # Written under another name and renamed, so a reader never sees a half-written file.
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(repr(time.time()))
    os.replace(temporary, path)


@app.task
def mark(path: str) -> None:
    """Write the wall-clock time it ran at into ``path`` (first and last task of a drain)."""
    _write_marker(path)


@app.task(ignore_result=True)
def mark_quiet(path: str) -> None:
    """``mark`` that stores no result."""
    _write_marker(path)
