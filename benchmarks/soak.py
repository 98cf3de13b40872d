"""Soak: many tasks through several prefork workers; does the memory of every process stay flat?

    python benchmarks/soak.py --broker redis://127.0.0.1:6379/14
    python benchmarks/soak.py --broker amqp://guest:guest@127.0.0.1:5672/celeriac-soak
    python benchmarks/soak.py --tasks 20000 --interval 0.5      # a short check of the script

It starts ``--workers`` celeriac workers through the CLI (``python -m celeriac -A bench_tasks
worker -P prefork -c N``, on ``--python``'s interpreter, as ``run.py`` does), with results on:
the ``noop`` task stores a result in ``--backend`` (by default the Redis database 14, also the
broker's database on a Redis run). Then a client process publishes ``--tasks`` no-ops with
``delay_many`` in batches of ``--batch``, never more than ``--max-queued`` unfinished at once,
so the broker holds a bounded queue the whole time.

The client counts a task done when its result is in the store. It checks the oldest batch
still out (one ``EXISTS`` of the batch's keys; tasks finish nearly in order, so the oldest
batch is complete first) and, once all of its results are there, ``forget``s them, so the
result store stays as small as the queue. ``result_expires`` (``--result-expires``) is set
too, for anything left behind (e.g. a result stored again by a redelivered task).

Every ``--interval`` seconds the runner reads, from ``/proc``, the resident memory (VmRSS,
its anonymous part RssAnon, and PSS) of each worker's main process, each pool child (the
workers' children, found by parent id), the client, and the broker servers (``redis-server``
and ``beam.smp``, whatever else they serve), plus Redis's own ``used_memory``, and the count
of tasks done so far. The samples go to ``samples.csv``; ``soak.json`` and ``summary.md``
under ``--out`` hold the summary, which is also printed: per process, RSS after warm-up
(``--warmup`` tasks), at 25/50/75/100 % of the tasks, the maximum, and the growth from
warm-up to the end, in total and per 100,000 tasks; and RSS per process at every 10 %.

A RabbitMQ URL naming a vhost other than ``/`` gets that vhost created (``rabbitmqctl``)
and deleted at the end, if it did not exist. The run stops when every task is done or after
``--timeout`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from procstat import broker_pids, children_of, cpu_seconds, memory_kb
from scenarios import stop_worker
from targets import REPO_DIR, Target, TargetFactory, probe, scheme
from targets import _without_password as without_password

DEFAULT_BACKEND = "redis://127.0.0.1:6379/14"
CHECKPOINTS = (0.25, 0.50, 0.75, 1.00)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        help="a Redis result backend URL (flushed at the start; the client forgets results)",
    )
    parser.add_argument("--python", default=sys.executable, help="celeriac's interpreter")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="pool children per worker")
    parser.add_argument("--worker-args", default="", help="extra worker options")
    parser.add_argument("--batch", type=int, default=500, help="delay_many batch size")
    parser.add_argument(
        "--max-queued", type=int, default=50_000, help="most tasks published and not yet done"
    )
    parser.add_argument("--result-expires", type=float, default=120.0, help="seconds")
    parser.add_argument("--warmup", type=int, default=20_000, help="tasks before the baseline")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=None, help="directory for the results")
    options = parser.parse_args(argv)
    if not scheme(options.backend).startswith("redis"):
        parser.error("--backend must be a Redis URL (the client checks results with EXISTS)")
    if options.tasks < 1 or options.batch < 1 or options.max_queued < options.batch:
        parser.error("--tasks and --batch must be positive, --max-queued at least --batch")
    options.python = os.path.abspath(options.python)
    return options


# -- the client (run in a process of its own, on celeriac's interpreter) ---------------------
def client_main(argv: list[str]) -> None:
    """Publish, keep at most ``max_queued`` unfinished, count and forget finished results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--max-queued", type=int, required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds from now")
    options = parser.parse_args(argv)

    import bench_tasks
    import redis

    app, noop = bench_tasks.app, bench_tasks.noop
    results = redis.Redis.from_url(os.environ["BENCH_BACKEND"])
    prefix = "celery-task-meta-"
    deadline = time.monotonic() + options.deadline
    pending: deque[list[str]] = deque()  # task ids of each batch out, oldest first
    published = done = 0
    last_write = 0.0

    def write_progress(force: bool = False) -> None:
        nonlocal last_write
        now = time.monotonic()
        if force or now - last_write >= 0.25:
            last_write = now
            temporary = f"{options.progress}.tmp"
            with open(temporary, "w") as handle:
                json.dump({"published": published, "done": done, "time": time.time()}, handle)
            os.replace(temporary, options.progress)

    try:
        while done < options.tasks and time.monotonic() < deadline:
            progressed = False
            while pending:  # the oldest batches whose results are all stored
                ids = pending[0]
                if results.exists(*[prefix + task_id for task_id in ids]) < len(ids):
                    break
                app.backend.forget(ids)
                pending.popleft()
                done += len(ids)
                progressed = True
            while published < options.tasks:
                size = min(options.batch, options.tasks - published)
                if published - done + size > options.max_queued:
                    break
                pending.append([result.id for result in noop.delay_many([()] * size)])
                published += size
                progressed = True
            write_progress()
            if not progressed:
                time.sleep(0.1)
        write_progress(force=True)
    finally:
        app.close()
    print(json.dumps({"published": published, "done": done, "outstanding": published - done}))


# -- the runner ------------------------------------------------------------------------------
class Processes:
    """Labels for every process sampled, stable over the run (a replaced child gets a new one)."""

    def __init__(self, workers: list[subprocess.Popen[bytes]]) -> None:
        self.workers = workers
        self.child_labels: dict[int, str] = {}
        self.children_seen = [0] * len(workers)

    def current(self, client: subprocess.Popen[bytes] | None) -> list[tuple[str, str, int]]:
        """(kind, label, pid) of every process to sample now."""
        found = []
        for index, worker in enumerate(self.workers):
            number = index + 1
            found.append(("worker main", f"worker{number} main", worker.pid))
            for pid in sorted(children_of(worker.pid)):
                if pid not in self.child_labels:
                    self.children_seen[index] += 1
                    self.child_labels[pid] = f"worker{number} child{self.children_seen[index]}"
                found.append(("pool child", self.child_labels[pid], pid))
        if client is not None and client.poll() is None:
            found.append(("client", "client", client.pid))
        for pid in broker_pids():
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
            found.append(("broker server", name, pid))
        return found


def redis_memory(url: str) -> dict[str, int] | None:
    """Redis's ``used_memory`` (its data and buffers, in KiB) and the keys in the database."""
    import redis  # the runner's interpreter needs redis-py, as run.py's Redis runs do

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        used = int(client.info("memory")["used_memory"]) // 1024
        keys = int(client.dbsize())
        client.close()
    except redis.RedisError:
        return None
    return {"used": used, "keys": keys}


def read_progress(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"published": 0, "done": 0}


@contextlib.contextmanager
def own_vhost(broker: str) -> Any:
    """Create the amqp URL's vhost when it is not ``/`` and does not exist; delete it after."""
    created = None
    if scheme(broker).startswith(("amqp", "pyamqp")):
        path = urlsplit(broker).path
        vhost = unquote(path[1:]) if len(path) > 1 else "/"
        if vhost != "/":
            existing = subprocess.run(
                ["rabbitmqctl", "-q", "list_vhosts", "name"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.split()
            if vhost not in existing:
                subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, timeout=60)
                created = vhost
                grant = ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]
                subprocess.run(["rabbitmqctl", "-q", *grant], check=True, timeout=60)
    try:
        yield
    finally:
        if created is not None:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", created], timeout=60)


def start_worker(target: Target, options: argparse.Namespace, number: int) -> Any:
    command = [
        *target.worker_command("prefork", options.concurrency),
        "-n",
        f"soak{number}@%h",
    ]
    log = open(target.workdir / f"worker{number}.log", "wb")  # noqa: SIM115  (closed at stop)
    process = subprocess.Popen(
        command,
        env=soak_env(target, options),
        cwd=target.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def soak_env(target: Target, options: argparse.Namespace) -> dict[str, str]:
    env = target.env()
    env["BENCH_RESULT_EXPIRES"] = repr(options.result_expires)
    return env


def wait_for_children(workers: list[subprocess.Popen[bytes]], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {worker.pid} exited with {worker.returncode}")
        if all(len(children_of(worker.pid)) >= count for worker in workers):
            return
        time.sleep(0.1)
    raise RuntimeError("the workers' pool children did not start in time")


def soak(options: argparse.Namespace, out: Path) -> dict[str, Any]:
    factory = TargetFactory(
        options.broker, options.backend, "sqla", options.worker_args.split(), {}
    )
    factory.pythons["celeriac"] = options.python
    target = factory.make("celeriac")  # empties the queue (a Redis broker: its database)
    started_wall = time.time()
    samples: list[dict[str, Any]] = []
    workers: list[subprocess.Popen[bytes]] = []
    logs = []
    client: subprocess.Popen[bytes] | None = None
    answer: dict[str, Any] = {}
    progress_path = target.workdir / "progress.json"
    try:
        for number in range(1, options.workers + 1):
            process, log = start_worker(target, options, number)
            workers.append(process)
            logs.append(log)
        wait_for_children(workers, options.concurrency, 120)
        processes = Processes(workers)
        client_log = open(target.workdir / "client.log", "wb")  # noqa: SIM115
        logs.append(client_log)
        client = subprocess.Popen(
            [
                options.python,
                str(Path(__file__).resolve()),
                "client",
                "--tasks",
                str(options.tasks),
                "--batch",
                str(options.batch),
                "--max-queued",
                str(options.max_queued),
                "--progress",
                str(progress_path),
                "--deadline",
                str(options.timeout),
            ],
            env=soak_env(target, options),
            cwd=target.workdir,
            stdout=subprocess.PIPE,
            stderr=client_log,
        )
        started = time.monotonic()
        deadline = started + options.timeout
        last_report = 0.0
        while True:
            finished = client.poll() is not None
            sample_once(samples, processes, client, progress_path, started, options)
            done = samples[-1]["done"]
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                elapsed = time.monotonic() - started
                print(
                    f"# {elapsed:6.0f} s  {done:>9,} done  ({done / max(elapsed, 1e-9):,.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
            if finished or time.monotonic() >= deadline:
                break
            dead = [worker.pid for worker in workers if worker.poll() is not None]
            if dead:
                raise RuntimeError(f"worker(s) {dead} exited during the run")
            time.sleep(max(0.0, options.interval - (time.monotonic() - started) % options.interval))
        elapsed = time.monotonic() - started
        if client.poll() is None:  # the time ran out
            stop_worker(client, warm=True, timeout=10)
        stdout = client.stdout.read().decode() if client.stdout else ""
        client.wait()
        with contextlib.suppress(ValueError, IndexError):
            answer = json.loads(stdout.strip().splitlines()[-1])
    finally:
        if client is not None and client.poll() is None:
            stop_worker(client, warm=True, timeout=10)
        for worker in workers:
            stop_worker(worker, warm=True)
        for log in logs:
            log.close()
        for path in target.workdir.glob("*.log"):
            shutil.copy(path, out / path.name)
        target.cleanup()
    info = probe("celeriac", options.python)
    progress = read_progress(progress_path) if progress_path.exists() else {}
    done = int(answer.get("done", progress.get("done", samples[-1]["done"] if samples else 0)))
    left = redis_memory(options.backend)
    return {
        "command": shlex.join(["python", "benchmarks/soak.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started_wall)),
        "commit": git_commit(),
        "celeriac": f"{info['build']}, from {info['source']}; Python {info['python']}",
        "broker": without_password(options.broker),
        "backend": without_password(options.backend),
        "options": {key: str(value) for key, value in vars(options).items()},
        "tasks": options.tasks,
        "done": done,
        "client": answer,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed else 0.0,
        "keys_left_in_backend_db": left["keys"] if left else None,
        "samples": samples,
    }


def sample_once(
    samples: list[dict[str, Any]],
    processes: Processes,
    client: subprocess.Popen[bytes],
    progress_path: Path,
    started: float,
    options: argparse.Namespace,
) -> None:
    progress = read_progress(progress_path)
    now = round(time.monotonic() - started, 2)
    base = {"t": now, "done": int(progress["done"]), "published": int(progress["published"])}
    for kind, label, pid in processes.current(client):
        memory = memory_kb(pid)
        if memory is None:
            continue
        samples.append(
            {
                **base,
                "kind": kind,
                "label": label,
                "pid": pid,
                "rss_kb": memory["rss"],
                "anon_kb": memory.get("anon", 0),
                "pss_kb": memory.get("pss", 0),
                "cpu_s": round(cpu_seconds(pid), 2),
            }
        )
    redis_used = redis_memory(options.backend)
    if redis_used is not None:
        samples.append(
            {
                **base,
                "kind": "broker data",
                "label": "redis used_memory",
                "pid": 0,
                "rss_kb": redis_used["used"],
                "anon_kb": redis_used["used"],
                "pss_kb": 0,
                "cpu_s": 0,
                "keys": redis_used["keys"],
            }
        )


def git_commit() -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO_DIR), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
    )
    return completed.stdout.strip()[:100] or "?"


# -- the summary -----------------------------------------------------------------------------
def by_label(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        found.setdefault(sample["label"], []).append(sample)
    return found


def at_done(series: list[dict[str, Any]], count: float) -> dict[str, Any]:
    """The first sample taken once ``count`` tasks were done (else the last one)."""
    for sample in series:
        if sample["done"] >= count:
            return sample
    return series[-1]


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def summarize(result: dict[str, Any], warmup: int) -> dict[str, Any]:
    total = result["tasks"]
    rows = []
    for label, series in by_label(result["samples"]).items():
        kind = series[0]["kind"]
        start = at_done(series, warmup)
        points = [at_done(series, total * fraction) for fraction in CHECKPOINTS]
        end = series[-1]
        tasks = end["done"] - start["done"]
        growth = end["rss_kb"] - start["rss_kb"]
        anon_growth = end["anon_kb"] - start["anon_kb"]
        rows.append(
            {
                "kind": kind,
                "label": label,
                "pid": series[0]["pid"],
                "start_kb": start["rss_kb"],
                "points_kb": [point["rss_kb"] for point in points],
                "max_kb": max(sample["rss_kb"] for sample in series),
                "growth_kb": growth,
                "anon_growth_kb": anon_growth,
                "tasks_after_warmup": tasks,
                "growth_kb_per_100k": growth / tasks * 100_000 if tasks > 0 else None,
                "anon_growth_kb_per_100k": anon_growth / tasks * 100_000 if tasks > 0 else None,
            }
        )
    return {"rows": rows}


def markdown(result: dict[str, Any], warmup: int) -> str:
    summary = summarize(result, warmup)
    done, tasks = result["done"], result["tasks"]
    lines = [
        f"Broker `{result['broker']}`, results `{result['backend']}`; celeriac "
        f"{result['celeriac']}; {result['date']}; benchmark checkout at {result['commit']}.",
        "",
        f"{done:,} of {tasks:,} tasks done in {result['seconds']:.0f} s "
        f"({result['rate']:,.0f} tasks/s); {len(result['samples']):,} samples; keys left in "
        f"the result database at the end: {result['keys_left_in_backend_db']}.",
        "",
        f"RSS in MiB. *warm-up*: after {warmup:,} tasks; *growth*: warm-up to the last sample "
        "(RSS, and its anonymous part RssAnon, the heap), in KiB per 100,000 tasks.",
        "",
        "| process | pid | warm-up | 25 % | 50 % | 75 % | 100 % | max | growth | "
        "KiB/100k (RSS) | KiB/100k (anon) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in summary["rows"]:
        per = row["growth_kb_per_100k"]
        anon = row["anon_growth_kb_per_100k"]
        lines.append(
            f"| {row['label']} | {row['pid'] or '-'} | {mb(row['start_kb'])} | "
            + " | ".join(mb(kb) for kb in row["points_kb"])
            + f" | {mb(row['max_kb'])} | {row['growth_kb'] / 1024:+.1f} | "
            + (f"{per:+,.0f}" if per is not None else "-")
            + " | "
            + (f"{anon:+,.0f}" if anon is not None else "-")
            + " |"
        )
    lines += ["", curve(result), ""]
    return "\n".join(lines)


def curve(result: dict[str, Any]) -> str:
    """RSS (MiB) of every process at each 10 % of the tasks."""
    series = by_label(result["samples"])
    labels = list(series)
    header = "| done | s | " + " | ".join(labels) + " |"
    lines = [header, "|--:|--:|" + "--:|" * len(labels)]
    tasks = result["tasks"]
    previous = None
    for tenth in range(11):
        count = tasks * tenth / 10
        row = []
        when = None
        for label in labels:
            sample = at_done(series[label], count)
            if sample["done"] < count and tenth:  # this process's samples ended earlier
                row.append("-")
                continue
            when = when or sample
            row.append(mb(sample["rss_kb"]))
        if when is None or when["t"] == previous:  # no new sample since the last row
            continue
        previous = when["t"]
        lines.append(f"| {when['done']:,} | {when['t']:.0f} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: Path, warmup: int) -> str:
    fields = ["t", "done", "published", "kind", "label", "pid", "rss_kb", "anon_kb", "pss_kb"]
    fields += ["cpu_s", "keys"]
    with open(out / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result["samples"])
    summary = summarize(result, warmup)
    meta = {key: value for key, value in result.items() if key != "samples"}
    (out / "soak.json").write_text(json.dumps({**meta, "summary": summary}, indent=2))
    report = markdown(result, warmup)
    (out / "summary.md").write_text(report)
    return report


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["client"]:
        client_main(arguments[1:])
        return
    options = parse_args(arguments)
    out = options.out or Path(tempfile.mkdtemp(prefix="celeriac-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    with own_vhost(options.broker):
        result = soak(options, out)
    report = write_outputs(result, out, options.warmup)
    print(report)
    print(f"# samples and summary in {out}", file=sys.stderr)
    if result["done"] < result["tasks"]:
        print(f"# only {result['done']:,} of {result['tasks']:,} tasks done", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
