"""Tasks are generic over the function's parameters and return type."""

from __future__ import annotations

from typing import Any, reveal_type

from celeriac import AsyncResult, Celery, Task, current_app, group, shared_task

app = Celery("typing_cases", broker="memory://typing")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="typing.greet", queue="greetings", max_retries=2)
def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@app.task(bind=True)
def bound(self: Task[Any, Any], count: int) -> list[str]:
    return [self.name] * count


@app.task(bind=True)
def bound_open(self: Task[Any, Any], /, count: int, **options: Any) -> int:
    return count


@shared_task
def shared(text: str) -> bytes:
    return text.encode()


@shared_task(bind=True, ignore_result=True)
def shared_bound(self: Task[Any, Any], value: float) -> float:
    return value * 2


def calls() -> None:
    result: AsyncResult = add.delay(1, 2)
    add.delay(y=2, x=1)
    add.apply_async((1, 2), countdown=10, priority=3)
    add.delay("x", 2)  # E: [arg-type]
    add.delay(1, 2, 3)  # E: [call-arg]
    greet.delay("world")
    greet.delay("world", punctuation="?")
    greet.delay(name=1)  # E: [arg-type]
    bound.delay(3)
    bound.delay("three")  # E: [arg-type]
    bound_open.delay(1, anything="goes")
    bound_open.delay("one")  # E: [arg-type]
    shared.delay("text")
    shared.delay(b"bytes")  # E: [arg-type]
    shared_bound.delay(1.5)
    shared_bound.delay("1.5")  # E: [arg-type]
    print(result.id)


def signatures_and_direct_calls() -> None:
    reveal_type(add.s(1))  # N: celeriac.canvas.signature.Signature[int]
    reveal_type(greet.si("x"))  # N: celeriac.canvas.signature.Signature[str]
    reveal_type(bound.s(2))  # N: celeriac.canvas.signature.Signature[list[str]]
    reveal_type(shared.s("a"))  # N: celeriac.canvas.signature.Signature[bytes]
    add.si("one", 2)  # E: [arg-type]
    add.si(1)  # E: [call-arg]
    reveal_type(add(1, 2))  # N: int
    reveal_type(bound(2))  # N: list[str]
    reveal_type(shared("a"))  # N: bytes
    total: int = add(1, 2) + 1
    text: str = add(1, 2)  # E: [assignment]
    group(add.s(1, 2), add.s(3, 4)).apply_async()
    print(total, text, current_app.main)
