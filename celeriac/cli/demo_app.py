"""The app the demo runs: two small tasks on the embedded broker, in a scratch directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from celeriac import Celery

DEMO_DIR = Path(os.environ.get("CELERIAC_DEMO_DIR") or tempfile.gettempdir()) / "celeriac-demo"
DEMO_DIR.mkdir(parents=True, exist_ok=True)

app = Celery(
    "demo",
    broker=f"sqlite:///{DEMO_DIR / 'broker.sqlite3'}",
    backend=f"db+sqlite:///{DEMO_DIR / 'results.sqlite3'}",
)


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="demo.word_count")
def word_count(text: str) -> int:
    return len(text.split())
