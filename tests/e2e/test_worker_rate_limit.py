"""``rate_limit`` in a real worker: tasks over the limit wait, none are dropped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import WorkerProcess

APP = """
import time
from celeriac import Celery

app = Celery("limited", broker="sqlite:///{dir}/broker.db", backend="db+sqlite:///{dir}/r.db")

@app.task(rate_limit="10/s")
def stamp(i):
    return time.time()

@app.task
def free(i):
    return time.time()
"""


def test_rate_limited_task_runs_at_most_at_its_rate(
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    directory = project({"limited.py": APP.format(dir=tmp_path)})
    import limited

    start_worker(directory, "limited", "-P", "threads", "-c", "4")
    limited_results = limited.stamp.delay_many([(i,) for i in range(6)])
    free_results = limited.free.delay_many([(i,) for i in range(6)])
    limited_times = sorted(result.get(timeout=20) for result in limited_results)
    free_times = sorted(result.get(timeout=20) for result in free_results)
    # A bucket of one token refilled 10 times a second: 6 runs span at least 5 intervals.
    assert limited_times[-1] - limited_times[0] >= 0.45
    # Unlimited tasks are not held back by the limited ones.
    assert free_times[-1] - free_times[0] < 0.45
    limited.app.close()
