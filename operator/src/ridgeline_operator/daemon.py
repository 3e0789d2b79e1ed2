"""Each InferenceModel's daemon: the one writer of its status (as KubeRay's and cert-manager's
controllers are of theirs). It runs a pass when it starts (the model was created, or the
operator started), then one each time it is woken (wakeups.py) or its resync is due. A pass
reads a snapshot of the object, reconciles, and writes the status only onto the version it read;
a 409 (the object changed meanwhile) runs it again from the newer version."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from ridgeline.controller import Decision
from ridgeline_operator.diffbase import ModelsOnlyDiffBase
from ridgeline_operator.reconcile import STATE, Written, post_events, reconcile, write_status
from ridgeline_operator.wakeups import Key, Trigger, first_resync_s, next_resync_s

RESYNC_S = float(os.environ.get("RIDGELINE_RESYNC_SECONDS", "300"))
ERROR_S = 10.0  # a pass that failed unexpectedly is tried again after this
# Before a pass, the daemon waits (the live body checked every POLL_S, at most WAIT_S) until
# kopf's watch brought a version newer than one it knows to be outdated (its own status write
# landed on it, or a 409 said so), and kopf recorded that version's spec as handled: a status
# computed from an outdated copy, or written before kopf's own write, would meet a 409. One
# pass per version seen, not a loop against the same stale copy.
POLL_S = 0.05
WAIT_S = 2.0
# Where kopf records each InferenceModel's last handled spec (an annotation; handlers.py
# configures kopf with it): until it matches the object, kopf has a write of its own to make.
DIFFBASE = ModelsOnlyDiffBase(prefix="ridgeline.dev", key="last-handled-configuration")


async def run(
    body: kopf.Body,
    key: Key,
    stopped: kopf.DaemonStopped,
    indexes: Mapping[str, Any],
    logger: Any,
) -> None:
    """Until ``stopped``: wait for a wake, wait for a version worth reading, pass."""
    waker = STATE.wakeups.register(key)
    waker.wake(Trigger.SPEC)  # the first pass: now
    clock = asyncio.get_running_loop().time
    # The resync keeps its own schedule: a wake-up does not postpone it, or the models that
    # were all woken together (created together, say) would all resync together.
    resync_at = clock() + first_resync_s(RESYNC_S)
    stopping = asyncio.ensure_future(stopped.wait())  # the model is gone, or the operator exits
    applied: dict[str, Any] | None = None  # by a pass whose status met a 409
    outdated: str | None = None  # a resourceVersion known to be outdated
    try:
        while not stopped:
            triggers = await waker.wait(max(0.0, resync_at - clock()), stopping)
            if not triggers:
                break
            if clock() >= resync_at:
                resync_at = clock() + next_resync_s(RESYNC_S)
            # kopf writes a new object twice before it is handled (a finalizer, then the diff
            # base), and a changed one once (the diff base).
            await _until(body, _ready_after(outdated), stopping, WAIT_S)
            if stopped:
                break
            # The snapshot is taken here, on the event loop, where kopf swaps the live body:
            # never half of one version and half of the next.
            snapshot = _snapshot(body)
            waker.started_from = snapshot["metadata"].get("resourceVersion")
            triggers |= waker.drain()  # woken while it waited for kopf: this pass covers it
            # Not applied again: what the pass before applied, if its status met a 409 and the
            # RayService was not seen to change since.
            skip = applied if Trigger.RAYSERVICE not in triggers else None
            applied = None
            try:
                decision, written = await asyncio.to_thread(
                    _pass, snapshot, indexes, triggers, skip
                )
            except kopf.TemporaryError as exc:
                waker.wake(Trigger.RETRY)
                await asyncio.sleep(float(exc.delay or 1.0))
            except Exception:
                logger.exception("reconcile of %s/%s failed; retrying in %.0f s", *key, ERROR_S)
                waker.wake(Trigger.RETRY)
                await asyncio.sleep(ERROR_S)
            else:
                outdated = None if written is Written.NOTHING else waker.started_from
                if written is Written.CONFLICT:  # changed meanwhile: again, from the newer one
                    applied = decision.apply
                    waker.wake(Trigger.RETRY)
                else:
                    post_events(body, decision)
    finally:
        stopping.cancel()
        STATE.wakeups.unregister(key, waker)


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    return {
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def _pass(
    snapshot: dict[str, Any],
    indexes: Mapping[str, Any],
    triggers: Iterable[Trigger],
    applied: dict[str, Any] | None,
) -> tuple[Decision, Written]:
    """One pass from one snapshot (in a thread)."""
    decision = reconcile(snapshot, indexes, triggers, applied)
    return decision, write_status(snapshot, decision)


def _version(body: kopf.Body) -> str | None:
    return body.meta.get("resourceVersion")


def _ready_after(outdated: str | None) -> Callable[[kopf.Body], bool]:
    """Whether the live body is newer than ``outdated``, and kopf recorded its spec as
    handled (so kopf has nothing left to write)."""

    def ready(body: kopf.Body) -> bool:
        if outdated is not None and _version(body) == outdated:
            return False
        return DIFFBASE.fetch(body=body) == DIFFBASE.build(body=body)

    return ready


async def _until(
    body: kopf.Body,
    done: Callable[[kopf.Body], bool],
    stopping: asyncio.Future[Any],
    wait_s: float,
) -> None:
    """Until ``done(body)`` holds (asked again each time kopf's watch brought a new version),
    the daemon is asked to stop, or ``wait_s`` passed."""
    clock = asyncio.get_running_loop().time
    deadline = clock() + wait_s
    while True:
        asked = _version(body)
        if done(body):
            return
        while _version(body) == asked:
            if stopping.done() or clock() >= deadline:
                return
            await asyncio.wait({stopping}, timeout=min(POLL_S, max(0.0, deadline - clock())))
