"""Signatures and workflows as data: their dict shape and the messages they send.

No worker runs here. Messages are captured from the memory transport, decoded with the
protocol module, and compared with what Celery sends (see protocol.md §2.3, §2.7).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, Signature, signature, states
from celeriac.app.next_steps import fail_unrun
from celeriac.canvas import chain, chord, chunks, group, maybe_signature, xmap, xstarmap
from celeriac.exceptions import ChordError, ImproperlyConfigured, TaskRevokedError, WorkerLostError
from celeriac.protocol.headers import request_from_headers
from celeriac.protocol.message import decode_task_body
from celeriac.result import AsyncResult, GroupResult
from celeriac.transports.base import Transport

SIGNATURE_KEYS = {"task", "args", "kwargs", "options", "subtask_type", "immutable"}


class Captured:
    """A decoded task message: headers, args, kwargs and embed."""

    def __init__(self, headers: dict[str, Any], properties: dict[str, Any], body: Any) -> None:
        self.headers = headers
        self.properties = properties
        self.args, self.kwargs, self.embed = body.args, body.kwargs, body.embed
        self.id = headers["id"]


@pytest.fixture
def app() -> Iterator[Celery]:
    name = uuid.uuid4().hex
    app = Celery("canvas", broker=f"memory://{name}", backend=f"memory://{name}")

    @app.task(name="canvas.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="canvas.sub")
    def sub(x: int, y: int) -> int:
        return x - y

    @app.task(name="canvas.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    yield app
    app.close()


@pytest.fixture
def transport(app: Celery) -> Iterator[Transport]:
    created = app.create_transport()
    yield created
    created.close()


def sent(transport: Transport) -> list[Captured]:
    """Every message published so far, in order."""
    deliveries = transport.fetch(["celery"], 1000, 0.05)
    transport.ack(deliveries)
    return [
        Captured(
            delivery.envelope.headers,
            delivery.envelope.properties,
            decode_task_body(delivery.envelope, None),
        )
        for delivery in deliveries
    ]


def wire(value: Any) -> Any:
    """What a peer receives: the JSON form."""
    return json.loads(json.dumps(value))


# -- signatures -----------------------------------------------------------------------------


def test_signature_is_the_wire_dict(app: Celery) -> None:
    add = app.tasks["canvas.add"]
    sig = add.s(2)
    assert set(sig) == SIGNATURE_KEYS
    assert wire(sig) == {
        "task": "canvas.add",
        "args": [2],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
        "immutable": False,
    }
    assert add.si(2)["immutable"] is True and add.si(2).immutable
    assert sig.task == "canvas.add" and sig.args == (2,) and sig.kwargs == {}
    assert signature("canvas.add", args=(1,), kwargs={"y": 2}, countdown=3).options == {
        "countdown": 3
    }
    assert repr(add.s(1, y=2)) == "canvas.add(1, y=2)" and repr(add.si(1)) == "%canvas.add(1)"


def test_partial_arguments_come_after_the_call_arguments(app: Celery, transport: Transport) -> None:
    sub = app.tasks["canvas.sub"]
    sub.s(2).delay(10)
    sub.si(2, 1).delay(10)  # immutable: the call's arguments are ignored
    signature("canvas.sub", kwargs={"y": 1}).apply_async(kwargs={"x": 5})
    first, second, third = sent(transport)
    assert first.args == [10, 2]
    assert second.args == [2, 1]
    assert third.args == [] and third.kwargs == {"y": 1, "x": 5}
    assert sub.s(2).apply((10,)).get() == 8  # in process, same order


def test_signature_of_a_task_unknown_here_is_sent_by_name(
    app: Celery, transport: Transport
) -> None:
    result = signature("elsewhere.task", args=(1,), options={"priority": 3}).delay(0)
    (message,) = sent(transport)
    assert message.headers["task"] == "elsewhere.task" and message.id == result.id
    assert message.args == [0, 1]


def test_clone_set_link_and_freeze(app: Celery) -> None:
    add = app.tasks["canvas.add"]
    sig = add.s(2)
    clone = sig.clone(args=(1,), countdown=5)
    assert clone.args == (1, 2) and clone.options == {"countdown": 5}
    assert sig.args == (2,) and sig.options == {}  # the original is untouched
    assert add.si(2).clone(args=(1,)).args == (2,)  # immutable: arguments are fixed
    assert sig.set(queue="fast", immutable=True) is sig
    assert sig.options == {"queue": "fast"} and sig.immutable
    callback, errback = add.s(10), add.s(20)
    assert sig.link(callback) is callback
    sig.link_error(errback)
    assert wire(sig.options["link"]) == [wire(callback)]
    assert wire(sig.options["link_error"]) == [wire(errback)]
    result = sig.freeze()
    assert isinstance(result, AsyncResult) and result.id == sig.options["task_id"] == sig.id
    assert sig.freeze().id == result.id  # frozen once
    assert add.s().freeze("fixed-id").id == "fixed-id"


def test_pipe_builds_chains_and_chords(app: Celery) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    two = add.s(1, 1) | add.s(2)
    assert isinstance(two, chain) and [step.args for step in two.tasks] == [(1, 1), (2,)]
    three = two | add.s(3)
    assert isinstance(three, chain) and len(three.tasks) == 3
    assert len((two | (add.s(4) | add.s(5))).tasks) == 4
    to_chord = group(add.s(1, 1), add.s(2, 2)) | tsum.s()
    assert isinstance(to_chord, chord) and to_chord.body is not None
    assert to_chord.body.task == "canvas.tsum" and len(to_chord.header) == 2
    assert isinstance(add.s(1, 1) | group(add.s(1)), chain)


def test_from_dict_rebuilds_workflow_classes(app: Celery) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    workflow = chain(
        add.s(1, 1),
        group(add.s(2), add.s(3)),
        chord([add.s(4), add.s(5)], tsum.s()),
    )
    rebuilt = Signature.from_dict(wire(workflow), app=app)
    assert isinstance(rebuilt, chain)
    first, middle, last = rebuilt.tasks
    assert type(first) is Signature and first.args == (1, 1)
    assert isinstance(middle, group) and [m.args for m in middle.tasks] == [(2,), (3,)]
    assert isinstance(last, chord) and last.body is not None and last.body.task == "canvas.tsum"
    assert [member.args for member in last.header] == [(4,), (5,)]
    assert wire(rebuilt) == wire(workflow)  # a JSON round trip loses nothing
    assert maybe_signature(None) is None and maybe_signature(first) is first
    assert isinstance(maybe_signature(wire(middle), app=app), group)


def test_composite_signature_shapes(app: Celery) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    assert wire(chain(add.s(1, 1), add.s(2))) == {
        "task": "celery.chain",
        "args": [],
        "kwargs": {"tasks": [wire(add.s(1, 1)), wire(add.s(2))]},
        "options": {},
        "subtask_type": "chain",
        "immutable": False,
    }
    grouped = wire(group(add.s(1, 1)))
    assert grouped["task"] == "celery.group" and grouped["subtask_type"] == "group"
    assert grouped["kwargs"] == {"tasks": [wire(add.s(1, 1))]}
    chorded = wire(chord([add.s(1, 1)], tsum.s()))
    assert chorded["task"] == "celery.chord" and chorded["subtask_type"] == "chord"
    assert chorded["kwargs"] == {
        "header": [wire(add.s(1, 1))],
        "body": wire(tsum.s()),
        "kwargs": {},
    }
    for sig, name in ((xmap(tsum.s(), [[1]]), "celery.map"), (tsum.map([[1]]), "celery.map")):
        assert wire(sig) == {
            "task": name,
            "args": [],
            "kwargs": {"task": wire(tsum.s()), "it": [[1]]},
            "options": {},
            "subtask_type": None,
            "immutable": True,
        }
    assert wire(xstarmap(add.s(), [(1, 2)]))["kwargs"]["it"] == [[1, 2]]
    assert wire(add.chunks([(1, 2)], 5))["kwargs"] == {
        "task": wire(add.s()),
        "it": [[1, 2]],
        "n": 5,
    }


# -- messages -------------------------------------------------------------------------------


def test_chain_message(app: Celery, transport: Transport) -> None:
    add = app.tasks["canvas.add"]
    result = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    (message,) = sent(transport)  # only the first step is sent
    assert message.args == [1, 2] and message.kwargs == {}
    assert message.embed["callbacks"] is None and message.embed["chord"] is None
    last, middle = message.embed["chain"]  # reversed: the next step is the last element
    assert (last["args"], middle["args"]) == ([4], [3])
    assert last["options"]["task_id"] == result.id
    assert middle["options"]["task_id"] == result.parent.id
    assert message.id == result.parent.parent.id and result.parent.parent.parent is None
    assert message.headers["root_id"] == message.id
    assert {last["options"]["root_id"], middle["options"]["root_id"]} == {message.id}
    # Results of steps sent by workers still come back here with rpc://.
    assert {last["options"]["reply_to"], middle["options"]["reply_to"]} == {app.oid}
    assert message.properties["reply_to"] == app.oid


def test_chain_options(app: Celery, transport: Transport) -> None:
    add = app.tasks["canvas.add"]
    workflow = chain(add.s(1, 1), add.s(2))
    workflow.link(add.s(100))
    workflow.link_error(add.si(0, 0))
    result = workflow.apply_async(task_id="chain-id", countdown=0)
    (message,) = sent(transport)
    (last,) = message.embed["chain"]
    assert result.id == last["options"]["task_id"] == "chain-id"
    assert [link["args"] for link in last["options"]["link"]] == [[100]]
    assert message.embed["callbacks"] is None  # the callback follows the chain's result
    assert len(message.embed["errbacks"]) == 1 and len(last["options"]["link_error"]) == 1
    assert message.headers["eta"] is not None  # call options go to the first step


def test_group_message(app: Celery, transport: Transport) -> None:
    add = app.tasks["canvas.add"]
    result = group(add.s(i, i) for i in range(3)).apply_async()
    assert isinstance(result, GroupResult) and len(result) == 3
    messages = sent(transport)
    assert [m.id for m in messages] == [member.id for member in result]
    assert [m.headers["group"] for m in messages] == [result.id] * 3
    assert [m.headers["group_index"] for m in messages] == [0, 1, 2]
    assert [m.args for m in messages] == [[0, 0], [1, 1], [2, 2]]
    assert all(m.embed["chord"] is None for m in messages)
    group(add.s(1), add.s(2)).apply_async((10,))  # partial: every member gets the args
    assert [m.args for m in sent(transport)] == [[10, 1], [10, 2]]


def test_chord_message(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    result = chord((add.s(i, i) for i in range(3)), tsum.s()).apply_async()
    header = result.parent
    assert isinstance(header, GroupResult) and len(header) == 3
    messages = sent(transport)
    assert [m.id for m in messages] == [member.id for member in header]
    assert {m.headers["group"] for m in messages} == {header.id}
    assert [m.headers["group_index"] for m in messages] == [0, 1, 2]
    bodies = [m.embed["chord"] for m in messages]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["task"] == "canvas.tsum" and bodies[0]["chord_size"] == 3
    assert bodies[0]["options"]["task_id"] == result.id


def test_chord_with_chains_in_header(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    result = chord([add.s(1, 1) | add.s(2), add.s(3, 3)], tsum.s()).apply_async()
    chained, plain = sent(transport)
    # The chain's first step is no member: its last step counts, with the chain's result.
    assert chained.headers["group"] is None and chained.embed["chord"] is None
    (last,) = chained.embed["chain"]
    assert last["options"]["group_id"] == result.parent.id
    assert last["options"]["group_index"] == 0
    assert last["options"]["chord"]["options"]["task_id"] == result.id
    assert plain.headers["group_index"] == 1 and plain.embed["chord"]["chord_size"] == 2


def test_chain_with_group_then_task_sends_a_chord(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    result = (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()).apply_async()
    (message,) = sent(transport)
    (next_step,) = message.embed["chain"]
    assert next_step["subtask_type"] == "chord"
    assert next_step["kwargs"]["body"]["options"]["task_id"] == result.id
    header = result.parent
    assert isinstance(header, GroupResult)
    assert next_step["kwargs"]["header"]["options"]["task_id"] == header.id
    assert header.parent is not None and header.parent.id == message.id


def test_chord_inside_chain_carries_the_rest_in_its_body(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    result = chain(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(10)).apply_async()
    messages = sent(transport)
    assert len(messages) == 2 and all(m.embed["chain"] is None for m in messages)
    (after_body,) = messages[0].embed["chord"]["options"]["chain"]
    assert after_body["args"] == [10] and after_body["options"]["task_id"] == result.id


def test_chord_with_empty_header_sends_the_body(app: Celery, transport: Transport) -> None:
    result = chord([], app.tasks["canvas.tsum"].s()).apply_async()
    (message,) = sent(transport)
    assert message.id == result.id and message.args == [[]]


def test_chord_needs_a_result_backend(transport: Transport) -> None:
    app = Celery("canvas", broker=transport.url)
    with pytest.raises(ImproperlyConfigured):
        chord([app.signature("a")], app.signature("b")).apply_async()
    with pytest.raises(ValueError):
        chain(app=app).apply_async()


def test_chunks_send_a_group_of_starmaps(app: Celery, transport: Transport) -> None:
    add = app.tasks["canvas.add"]
    result = chunks(add.s(), [(i, i) for i in range(5)], 2).apply_async()
    assert isinstance(result, GroupResult) and len(result) == 3
    messages = sent(transport)
    assert {m.headers["task"] for m in messages} == {"celery.starmap"}
    assert [m.kwargs["it"] for m in messages] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4]]]
    assert [m.headers["group_index"] for m in messages] == [0, 1, 2]


def test_celery_reads_our_signatures_and_we_read_its(app: Celery) -> None:
    celery_canvas = pytest.importorskip("celery.canvas")
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    ours = chain(add.s(1, 1), chord([add.s(2), add.s(3)], tsum.s()), add.si(4, 4))
    theirs = celery_canvas.Signature.from_dict(wire(ours))
    assert type(theirs).__name__ == "_chain"
    assert [type(step).__name__ for step in theirs.tasks] == ["Signature", "_chord", "Signature"]
    assert theirs.tasks[2].immutable and theirs.tasks[1].body["task"] == "canvas.tsum"
    back = Signature.from_dict(wire(theirs), app=app)
    assert isinstance(back, chain) and isinstance(back.tasks[1], chord)
    assert [member.args for member in back.tasks[1].header] == [(2,), (3,)]


# -- workflow steps when a task ends without running (worker side, in process) --------------


def _request(message: Captured) -> dict[str, Any]:
    return request_from_headers(message.headers, {}, message.embed, {"routing_key": "celery"})


def test_lost_and_revoked_chord_members_fail_the_body(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    body = tsum.s()
    body.link_error(app.signature("canvas.on_error"))
    result = chord([add.s(1, 1), add.s(2, 2)], body).apply_async()
    first, second = sent(transport)
    fail_unrun(app, _request(first), WorkerLostError("lost"))
    assert app.AsyncResult(result.id).state == states.PENDING  # one member still to come
    fail_unrun(app, _request(second), TaskRevokedError("revoked"), state=states.REVOKED)
    assert app.AsyncResult(first.id).state == states.FAILURE
    assert app.AsyncResult(second.id).state == states.REVOKED
    body_result = app.AsyncResult(result.id)
    assert body_result.state == states.FAILURE
    assert isinstance(body_result.result, ChordError) and "lost" in str(body_result.result)
    (errback,) = sent(transport)  # old style errback of the body: gets the body's id
    assert errback.headers["task"] == "canvas.on_error" and errback.args == [result.id]


def test_lost_chain_step_fails_the_rest_of_the_chain(app: Celery, transport: Transport) -> None:
    add = app.tasks["canvas.add"]
    result = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
    (message,) = sent(transport)
    fail_unrun(app, _request(message), WorkerLostError("lost"))
    for step in (result, result.parent, result.parent.parent):
        assert app.AsyncResult(step.id).state == states.FAILURE
    with pytest.raises(WorkerLostError):
        result.get(timeout=1)
    assert sent(transport) == []  # nothing else runs


# -- in process: apply() and task_always_eager ----------------------------------------------


def test_workflows_apply_in_process(app: Celery, transport: Transport) -> None:
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    result = chain(add.s(1, 2), add.s(3), add.s(4)).apply()
    assert result.get() == 10 and result.parent.get() == 6 and result.parent.parent.get() == 3
    assert group(add.s(i, i) for i in range(3)).apply().get() == [0, 2, 4]
    chorded = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply()
    assert chorded.get() == 6 and chorded.parent.get() == [2, 4]
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()).apply().get() == 7
    assert add.chunks([(1, 1), (2, 2), (3, 3)], 2).apply().get() == [[2, 4], [6]]
    assert sent(transport) == []  # nothing went to the broker


def test_task_always_eager_runs_workflows_in_process(app: Celery, transport: Transport) -> None:
    app.conf.task_always_eager = True
    add, tsum = app.tasks["canvas.add"], app.tasks["canvas.tsum"]
    assert chain(add.s(1, 2), add.s(3)).delay().get() == 6
    assert group(add.s(1, 1), add.s(2, 2)).delay().get() == [2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)])(tsum.s()).get() == 6
    assert (add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s()) | add.s(10)).delay().get() == 17
    assert sent(transport) == []
