"""The remote-control client takes a celeriac app and is typed for callers."""

from __future__ import annotations

from typing import reveal_type

from celeriac import Celery
from celeriac.control import Control

control = Control(Celery("typing_control", broker="memory://typing"))


def uses() -> None:
    reveal_type(control.ping())  # N: list[dict[str, Any]] | None
    reveal_type(control.inspect().active())  # N: dict[str, Any] | None
    control.revoke(["t1", "t2"], terminate=True)
    control.rate_limit("tasks.add", "10/m", destination=["w1@host"])
    Control(object())  # E: [arg-type]
