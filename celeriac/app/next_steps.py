"""What follows a finished task in the workflow around it: its next steps, or their failure.

On success: apply the callbacks and the next chain step with the result, and count the task
towards its chord; the call that completes the chord's header sends the body with the
ordered results. On failure: call the errbacks (Celery's two styles), fail the rest of the
chain, and count the failure towards the chord, whose body then fails with a ChordError.

A step that can no longer run is marked FAILURE rather than left PENDING, so ``get()`` on
any result of a broken workflow raises instead of waiting forever.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.app.task import Context
from celeriac.canvas import workflows
from celeriac.canvas.signature import Signature
from celeriac.exceptions import ChordError
from celeriac.protocol.results import Meta, build_meta, exception_from_dict, exception_to_dict

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker")


class NextSteps:
    """Applies what follows the tasks of one type (``name`` is for the logs)."""

    def __init__(self, app: Celery, name: str) -> None:
        self.app = app
        self.name = name

    # -- success
    def apply_next(self, retval: object, context: Context) -> None:
        """Send the callbacks and the next chain step, each with ``retval`` first."""
        ids: dict[str, Any] = {"parent_id": context.id, "root_id": context.root_id or context.id}
        if context.priority:
            ids["priority"] = context.priority
        for callback in context.callbacks or ():
            sig = Signature.from_dict(callback, app=self.app)
            sig.apply_async((retval,), **ids)
        chain = list(context.chain or ())
        if chain:
            next_step = Signature.from_dict(chain.pop(), app=self.app)
            next_step.apply_async((retval,), chain=chain or None, **ids)

    def count_chord_member(
        self,
        chord: Mapping[str, Any],
        group_id: str,
        index: int,
        meta: Meta,
        parent_id: str | None,
    ) -> None:
        """Count one finished header member; the call that completes the header goes on."""
        body = Signature.from_dict(chord, app=self.app)
        size = int(chord.get("chord_size") or body.options.get("chord_size") or 0)
        members = self.app.backend.chord_part_return(group_id, size, index, meta)
        if members is None:
            return
        failed = [m for m in members if m.get("status") in states.PROPAGATE_STATES]
        if failed:
            first = failed[0]
            error = ChordError(
                f"Dependency {first.get('task_id')} raised "
                f"{exception_from_dict(first.get('result'))!r}"
            )
            self.fail_pending(body, error, None, errbacks=True)
            return
        results = [m.get("result") for m in members]
        body.apply_async((results,), parent_id=parent_id)

    # -- failure
    def after_failure(self, exc: BaseException, traceback: str | None, context: Context) -> None:
        """Call the errbacks and fail the rest of the chain (the chord is counted apart)."""
        self.call_errbacks(context.errbacks or (), context, exc, traceback)
        # The rest of the chain will not run: fail it now rather than leave it pending.
        for step in reversed(context.chain or ()):
            sig = Signature.from_dict(step, app=self.app)
            try:
                self.fail_pending(sig, exc, traceback, errbacks=False)
            except Exception:
                logger.exception("Task %s[%s]: cannot fail step %r", self.name, context.id, sig)

    def fail_pending(
        self,
        sig: Signature[Any],
        exc: BaseException,
        traceback: str | None,
        errbacks: bool,
    ) -> None:
        """Mark a workflow step that can no longer run as failed, and what waits for it.

        Its result becomes FAILURE, its errbacks are called when ``errbacks``, the steps
        chained after it fail too, and if it is a chord header member it is counted (so
        that chord's body fails in turn).
        """
        if isinstance(sig, workflows.chain | workflows.group):
            for step in sig.tasks:
                self.fail_pending(step, exc, traceback, errbacks)
        elif isinstance(sig, workflows.chord):
            body = sig.body
            if body is not None:
                self.fail_pending(body, exc, traceback, errbacks)
        else:
            self._fail_step(sig, exc, traceback, errbacks)

    def _fail_step(
        self, sig: Signature[Any], exc: BaseException, traceback: str | None, errbacks: bool
    ) -> None:
        """:meth:`fail_pending` for one task signature."""
        options = sig.options
        task_id = sig.id
        meta = build_meta(task_id or "", states.FAILURE, exception_to_dict(exc), traceback)
        if task_id:
            self.app.backend.store([meta])
        if errbacks and options.get("link_error"):
            self.call_errbacks(options["link_error"], _unrun_request(sig), exc, traceback)
        for step in reversed(options.get("chain") or ()):
            self.fail_pending(Signature.from_dict(step, app=self.app), exc, traceback, False)
        chord, group_id = options.get("chord"), options.get("group_id")
        if chord and group_id and task_id:
            self.count_chord_member(chord, group_id, options.get("group_index") or 0, meta, None)

    def call_errbacks(
        self, errbacks: Sequence[Any], request: Context, exc: BaseException, traceback: str | None
    ) -> None:
        """Celery's two styles: ``f(request, exc, traceback)`` here, or ``f.delay(task_id)``."""
        for errback in errbacks:
            sig = Signature.from_dict(errback, app=self.app)
            try:
                target = self.app.tasks.get(sig.task)
                fun = getattr(target, "__wrapped__", None) if target is not None else None
                if fun is not None and takes_request(fun, bool(getattr(target, "_bound", False))):
                    sig(request, exc, traceback)
                else:
                    sig.apply_async(
                        (request.id,), parent_id=request.id, root_id=request.root_id or request.id
                    )
            except Exception:
                logger.exception("Task %s[%s]: errback %r failed", self.name, request.id, sig)


def _unrun_request(sig: Signature[Any]) -> Context:
    """The ``request`` an errback gets for a step that never ran: what its signature says."""
    options = sig.options
    return Context(
        id=sig.id,
        task=sig.task,
        args=sig.args,
        kwargs=sig.kwargs,
        root_id=options.get("root_id"),
        parent_id=options.get("parent_id"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        called_directly=False,
    )


def takes_request(fun: Callable[..., Any], bound: bool) -> bool:
    """Whether an errback is "new style": it takes more than the failed task's id."""
    try:
        parameters = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return False
    if bound:
        parameters = parameters[1:]
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > 1 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def fail_unrun(
    app: Celery,
    request: Mapping[str, object],
    exc: BaseException,
    traceback: str | None = None,
    state: str = states.FAILURE,
) -> None:
    """A task ended without its code finishing (process lost, revoked, expired).

    Stores ``state`` with ``exc`` and moves its workflow on as Celery does: errbacks called,
    the rest of its chain failed, and a chord header member counted (its body then fails
    with a ChordError instead of waiting forever). ``request`` is the task's request dict
    (:func:`celeriac.protocol.headers.request_from_headers`).
    """
    context = Context(request, called_directly=False)
    steps = NextSteps(app, context.task or "")
    meta = build_meta(
        context.id or "",
        state,
        exception_to_dict(exc),
        traceback,
        extra={"group_id": context.group} if context.group else None,
    )
    app.backend.store([meta])
    steps.after_failure(exc, traceback, context)
    if context.chord and context.group:
        steps.count_chord_member(
            context.chord, context.group, context.group_index or 0, meta, context.id
        )
