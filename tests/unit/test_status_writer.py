"""The model's daemon is the one writer of its status: the change handlers only wake it, each
pass writes onto the object it read (a 409 takes a new snapshot and runs again), and Events go
out once per transition, after the status landed. The daemon runs for real here, against a fake
API server that answers the conditional status write as Kubernetes does."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import kopf
import pytest

from ridgeline_operator import daemon as model_daemon
from ridgeline_operator import handlers, kube, reconcile
from ridgeline_operator.reconcile import STATE
from ridgeline_operator.wakeups import Trigger
from tests.unit.test_handlers import fresh_state, model_raw

KEY = ("ns", "m")
SAFETY_S = 60.0  # only so that a broken daemon fails the test instead of hanging it


class Server:
    """The API server's copy of one InferenceModel. A status write onto an older
    resourceVersion is a 409; every new version reaches the daemon's live body the way kopf's
    watch brings it: later, on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: str, handled: bool = True) -> None:
        self.loop = loop
        self.raw = model_raw(uri)
        if handled:  # an existing model: kopf recorded its spec as handled long ago
            self.raw["metadata"]["annotations"] = self._diff_base(self.raw)
        self.body = kopf.Body(copy.deepcopy(self.raw))
        self.log: list[tuple[Any, ...]] = []
        self.held: list[dict[str, Any]] | None = None
        self.pruned: set[str] = set()  # status fields the CRD's schema does not keep
        self._lock = threading.Lock()

    @staticmethod
    def _diff_base(raw: dict[str, Any]) -> dict[str, str]:
        """kopf's record of this spec as handled: the annotations it writes after a create or
        update handler returned (its prefix's marker, and the diff base)."""
        essence = model_daemon.DIFFBASE.build(body=kopf.Body(copy.deepcopy(raw)))
        return {
            "ridgeline.dev/kopf-managed": "yes",
            "ridgeline.dev/last-handled-configuration": json.dumps(essence) + "\n",
        }

    @property
    def resource_version(self) -> str:
        return str(self.raw["metadata"]["resourceVersion"])

    def _store(self, raw: dict[str, Any]) -> None:
        raw["metadata"]["resourceVersion"] = str(int(self.resource_version) + 1)
        self.raw = raw
        if self.held is None:
            self.loop.call_soon_threadsafe(self.body._replace_with, copy.deepcopy(raw))
        else:
            self.held.append(copy.deepcopy(raw))

    def hold(self) -> None:
        """The watch falls behind: new versions reach the body once released."""
        self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for raw in held:
            self.loop.call_soon_threadsafe(self.body._replace_with, raw)

    def change(self, spec: dict[str, Any] | None = None, **metadata: Any) -> None:
        """Someone else's write: a new spec (a new generation), or metadata."""
        with self._lock:
            raw = copy.deepcopy(self.raw)
            if spec is not None:
                raw["spec"].update(spec)
                raw["metadata"]["generation"] += 1
            raw["metadata"].update(metadata)
            self._store(raw)

    def handled(self) -> None:
        """kopf's write once its change handler returned."""
        with self._lock:
            raw = copy.deepcopy(self.raw)
            raw["metadata"].setdefault("annotations", {}).update(self._diff_base(raw))
            self._store(raw)

    def patch_status(
        self,
        api: Any,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        resource_version: str,
        status: dict[str, Any],
    ) -> str:
        with self._lock:
            if resource_version != self.resource_version:
                self.log.append(("409", resource_version))
                raise kube.ConflictError(resource_version)
            raw = copy.deepcopy(self.raw)
            raw["status"] = merge(raw.get("status") or {}, status)
            for field in self.pruned:
                raw["status"].pop(field, None)
            self.log.append(("status", resource_version, raw["status"]["observedGeneration"]))
            if raw != self.raw:  # a patch that changes nothing keeps the resourceVersion
                self._store(raw)
            return self.resource_version


def merge(target: Any, patch: Any) -> Any:
    """A JSON merge patch applied as the API server does (RFC 7386): null removes a key, an
    object merges into an object, anything else (a list too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class Stopped:
    """kopf's DaemonStopped as the daemon uses it: false until set, and awaitable."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __bool__(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self) -> None:
        self._event.set()


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_state(monkeypatch)
    monkeypatch.setattr(model_daemon, "RESYNC_S", 3600.0)  # no resync within a test


class Daemon:
    """``handlers.follow`` for one model, with the passes it ran: (triggers, generation read)."""

    def __init__(self, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.passes: list[tuple[frozenset[Trigger], int]] = []
        # each time it had to wait before a pass: for kopf ("handled"), or after a 409 ("newer")
        self.waited: list[tuple[str, str]] = []
        self.stopped = Stopped()
        reconcile, until = model_daemon.reconcile, model_daemon._until

        async def waited(body: Any, done: Any, stopping: Any, wait_s: float) -> None:
            if not done(body):
                what = "newer" if _handled(body) else "handled"
                self.waited.append((what, body.meta["resourceVersion"]))
            await until(body, done, stopping, wait_s)

        def counted(body: Any, indexes: Any, triggers: Iterable[Trigger], applied: Any) -> Any:
            self.passes.append((frozenset(triggers), body["metadata"]["generation"]))
            return reconcile(body, indexes, triggers, applied)

        monkeypatch.setattr(model_daemon, "reconcile", counted)
        monkeypatch.setattr(model_daemon, "_until", waited)
        monkeypatch.setattr(kube, "patch_status", server.patch_status)
        monkeypatch.setattr(kopf, "event", self._event)
        self.task = asyncio.create_task(
            handlers.follow(
                body=server.body,
                namespace="ns",
                name="m",
                logger=logging.getLogger(__name__),
                stopped=self.stopped,  # type: ignore[arg-type]
                rayservice_index={},
                raycluster_index={},
            )
        )

    def _event(self, body: Any, *, type: str, reason: str, message: str) -> None:
        self.server.log.append(("event", message.split(":")[0]))

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(SAFETY_S):
            while not done():
                if self.task.done():
                    self.task.result()  # the daemon's own failure, if any
                    raise AssertionError("the daemon exited")
                await asyncio.sleep(0.01)

    async def settle(self, passes: int) -> None:
        """Wake it once more and wait for that pass: a pass owed from before would show up
        in ``passes`` first (nothing else is left pending when this returns)."""
        await self.until(lambda: len(self.passes) == passes)
        STATE.wakeups.wake(KEY, Trigger.RAYSERVICE)
        await self.until(lambda: len(self.passes) > passes)
        self.stopped.set()
        async with asyncio.timeout(SAFETY_S):
            await self.task


def _handled(body: kopf.Body) -> bool:
    return model_daemon._ready_after(None)(body)


def _writes(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [entry for entry in log if entry[0] != "event"]


@pytest.mark.parametrize("rayservice_changed", [False, True])
def test_a_409_takes_a_new_snapshot_and_the_status_lands_once(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch, rayservice_changed: bool
) -> None:
    """The object changes while the first pass runs (a finalizer): its status write meets a
    409. The next pass reads the newer object and writes; the RayService it applied is not
    applied again (unless it was seen to change meanwhile), and each transition's Event goes
    out once, after the write."""

    async def scenario() -> tuple[Server, Daemon, list[dict[str, Any]]]:
        server = Server(asyncio.get_running_loop(), skeleton_dir("tiny-llama").as_uri())
        applied: list[dict[str, Any]] = []

        def apply(api: Any, manifest: dict[str, Any]) -> None:
            if not applied:
                server.hold()
                server.change(finalizers=["example.com/keep"])  # someone else's
                if rayservice_changed:
                    server.loop.call_soon_threadsafe(STATE.wakeups.wake, KEY, Trigger.RAYSERVICE)
            applied.append(manifest)

        monkeypatch.setattr(kube, "apply_rayservice", apply)
        daemon = Daemon(server, monkeypatch)
        await daemon.until(lambda: bool(daemon.waited))  # the 409, before the watch brought 8
        assert len(daemon.passes) == 1
        server.release()
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        applies = list(applied)
        await daemon.settle(2)
        return server, daemon, applies

    server, daemon, applies = asyncio.run(scenario())
    retry = {Trigger.RETRY, Trigger.RAYSERVICE} if rayservice_changed else {Trigger.RETRY}
    assert daemon.passes == [
        (frozenset({Trigger.SPEC}), 1),  # the daemon's first pass, as it starts
        (frozenset(retry), 1),  # the 409: again, from the newer object
        (frozenset({Trigger.RAYSERVICE}), 1),  # nothing was left pending
    ]
    assert daemon.waited == [("newer", "7")]  # not again from 7: until the watch brought 8
    assert len(applies) == (2 if rayservice_changed else 1)
    assert _writes(server.log) == [("409", "7"), ("status", "8", 1)]
    events = [e[1] for e in server.log if e[0] == "event"]
    assert server.log[2:] == [("event", e) for e in events]  # after the status landed
    assert sorted(events) == sorted(set(events))  # once per transition
    assert {"Planned=True", "Applied=True"} <= set(events)
    assert server.raw["status"]["observedGeneration"] == 1


def test_a_spec_change_while_a_pass_runs_ends_with_the_newer_generations_status(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> tuple[Server, Daemon]:
        server = Server(asyncio.get_running_loop(), skeleton_dir("tiny-llama").as_uri())
        applying, release = threading.Event(), threading.Event()

        def apply(api: Any, manifest: dict[str, Any]) -> None:
            if not applying.is_set():
                applying.set()
                assert release.wait(SAFETY_S)

        monkeypatch.setattr(kube, "apply_rayservice", apply)
        daemon = Daemon(server, monkeypatch)
        await daemon.until(applying.is_set)  # the first pass, from generation 1, is applying
        server.change(spec={"replicas": {"min": 0, "max": 4}})
        await daemon.until(lambda: server.body.meta["resourceVersion"] == "8")
        patch = kopf.Patch()
        await handlers.on_change(body=server.body, patch=patch, namespace="ns", name="m")
        assert not patch  # the change handler writes nothing itself...
        server.handled()  # ...kopf records the spec as handled
        release.set()
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        await daemon.settle(2)
        return server, daemon

    server, daemon = asyncio.run(scenario())
    assert daemon.passes == [
        (frozenset({Trigger.SPEC}), 1),
        # the spec's wake and the 409's retry make one pass, from generation 2
        (frozenset({Trigger.SPEC, Trigger.RETRY}), 2),
        (frozenset({Trigger.RAYSERVICE}), 2),
    ]
    assert _writes(server.log) == [("409", "7"), ("status", "9", 2)]
    assert server.raw["status"]["observedGeneration"] == 2


def test_the_pass_after_a_status_write_reads_the_object_that_write_made(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake right after a write, before kopf's watch brought the written object: a pass from
    the copy before the write would compute from an outdated status and meet a 409."""
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: None)

    async def scenario() -> tuple[Server, Daemon]:
        server = Server(asyncio.get_running_loop(), skeleton_dir("tiny-llama").as_uri())
        server.hold()
        daemon = Daemon(server, monkeypatch)
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        STATE.wakeups.wake(KEY, Trigger.RAYCLUSTER)
        await daemon.until(lambda: bool(daemon.waited))
        assert len(daemon.passes) == 1
        server.release()
        await daemon.settle(2)
        return server, daemon

    server, daemon = asyncio.run(scenario())
    assert daemon.waited == [("newer", "7")]
    assert daemon.passes == [
        (frozenset({Trigger.SPEC}), 1),
        (frozenset({Trigger.RAYCLUSTER}), 1),  # from version 8: its own status, nothing to write
        (frozenset({Trigger.RAYSERVICE}), 1),
    ]
    assert _writes(server.log) == [("status", "7", 1)]


def test_the_change_handler_wakes_the_daemon_unless_its_pass_started_from_that_version() -> None:
    async def scenario() -> list[frozenset[Trigger]]:
        waker = STATE.wakeups.register(KEY)
        body = kopf.Body({"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7"}})
        got = []
        await handlers.on_change(body=body, namespace="ns", name="m")
        got.append(await waker.wait(0.01))
        waker.started_from = "7"  # a daemon that started while kopf handled version 7
        await handlers.on_change(body=body, namespace="ns", name="m")
        got.append(await waker.wait(0.01))
        return got

    assert asyncio.run(scenario()) == [frozenset({Trigger.SPEC}), frozenset({Trigger.RESYNC})]


def test_a_created_models_first_pass_waits_for_kopf_to_record_it_as_handled(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf adds its finalizer to a new object, then runs the create handler and records the
    spec as handled: a first pass that read the object before those writes would meet a 409
    and run twice."""
    monkeypatch.setattr(model_daemon, "WAIT_S", SAFETY_S)
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: None)

    async def scenario() -> tuple[Server, Daemon, list[Any]]:
        uri = skeleton_dir("tiny-llama").as_uri()
        server = Server(asyncio.get_running_loop(), uri, handled=False)
        daemon = Daemon(server, monkeypatch)  # kopf starts it as it first sees the object
        await daemon.until(lambda: bool(daemon.waited or daemon.passes))
        before = [*daemon.waited, *daemon.passes]
        server.change(finalizers=["kopf.zalando.org/KopfFinalizerMarker"])
        await handlers.on_change(body=server.body, namespace="ns", name="m")
        server.handled()
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        await daemon.settle(1)
        return server, daemon, before

    server, daemon, before = asyncio.run(scenario())
    assert before == [("handled", "7")]  # no pass read version 7
    assert daemon.passes[0] == (frozenset({Trigger.SPEC}), 1)
    assert _writes(server.log) == [("status", "9", 1)]  # no 409


def test_a_pass_waits_for_a_newer_version_that_kopf_recorded_as_handled() -> None:
    raw: dict[str, Any] = {
        "apiVersion": "ridgeline.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"model": {"uri": "s3://b/m"}},
    }
    new = kopf.Body(copy.deepcopy(raw))
    raw["metadata"]["annotations"] = Server._diff_base(raw)
    handled = kopf.Body(raw)
    assert not model_daemon._ready_after(None)(new)  # kopf has yet to write onto it
    assert model_daemon._ready_after(None)(handled)
    assert not model_daemon._ready_after("7")(handled)  # known to be outdated
    assert model_daemon._ready_after("6")(handled)


def test_the_wait_ends_with_a_newer_version_or_when_the_daemon_stops() -> None:
    """No pass against the same stale copy: the daemon waits until kopf's watch brought a
    newer version (the condition is asked again only then), or it is asked to stop."""

    def newer_than(version: str) -> Any:
        return lambda body: body.meta["resourceVersion"] != version

    async def scenario() -> tuple[bool, bool, bool]:
        body = kopf.Body({"metadata": {"resourceVersion": "7"}})
        stopping: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(
            model_daemon._until(body, newer_than("7"), stopping, SAFETY_S)
        )
        for _ in range(10):
            await asyncio.sleep(0)
        still_waiting = not waiting.done()
        body._replace_with({"metadata": {"resourceVersion": "8"}})
        async with asyncio.timeout(SAFETY_S):
            await waiting
        stopped = asyncio.create_task(
            model_daemon._until(body, newer_than("8"), stopping, SAFETY_S)
        )
        for _ in range(10):
            await asyncio.sleep(0)
        still_waiting_for_8 = not stopped.done()
        stopping.set_result(None)
        async with asyncio.timeout(SAFETY_S):
            await stopped
        return still_waiting, waiting.done(), still_waiting_for_8

    assert asyncio.run(scenario()) == (True, True, True)


def test_the_fake_server_merges_as_rfc_7386_and_keeps_the_version_of_a_no_op() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "l": [1, 2], "k": 1}, {"a": {"c": None}, "l": [3]}) == {
        "a": {"b": 1},
        "l": [3],
        "k": 1,
    }

    async def scenario() -> tuple[str, str]:
        server = Server(asyncio.get_running_loop(), "s3://b/m")
        status = {"observedGeneration": 1}
        server.patch_status(None, "g", "v", "p", "ns", "m", "7", status)
        first = server.resource_version
        server.patch_status(None, "g", "v", "p", "ns", "m", first, status)
        return first, server.resource_version

    assert asyncio.run(scenario()) == ("8", "8")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"weights": {"uri": "s3://b/m", "secondsLeft": 3.0}}, {"weights": {"uri": "s3://b/m"}}),
        ({"endpoint": "http://m", "weights": {"uri": "u"}}, {"observedGeneration": 2}),
        ({"conditions": [{"type": "A"}, {"type": "B"}]}, {"conditions": [{"type": "A"}]}),
        ({"plan": 1}, {"plan": {"pool": "p"}}),
        ({}, {"observedGeneration": 1}),
    ],
)
def test_the_status_patch_removes_what_the_new_status_dropped(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """A key a merge patch leaves out stays on the server: a dropped one is sent as null."""
    assert merge(old, reconcile.merge_patch(old, new)) == new


def test_a_status_field_the_operator_dropped_goes_from_the_server(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object still says weights (the node cache since disabled) and an endpoint: the one
    write removes them, and the next pass finds nothing to write (a write the server takes as a
    no-op would keep its resourceVersion, and every later pass wait for a newer one)."""
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: None)

    async def scenario() -> Server:
        uri = skeleton_dir("tiny-llama").as_uri()
        server = Server(asyncio.get_running_loop(), uri)
        server.raw["status"] = {
            "observedGeneration": 1,
            "weights": {"uri": uri, "directory": "d", "secondsLeft": 5.0},
        }
        server.body._replace_with(copy.deepcopy(server.raw))
        daemon = Daemon(server, monkeypatch)
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        await daemon.settle(1)
        return server

    server = asyncio.run(scenario())
    assert _writes(server.log) == [("status", "7", 1)]
    assert "weights" not in server.raw["status"]


def test_a_write_the_server_takes_as_a_no_op_leaves_no_version_to_wait_for(
    skeleton_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server prunes a field the status has (a CRD schema without it): each pass writes it
    again and the server changes nothing, so no newer version comes. The pass after that write
    does not wait for one (2 s each time)."""
    monkeypatch.setattr(kube, "apply_rayservice", lambda api, manifest: None)
    monkeypatch.setattr(model_daemon, "WAIT_S", SAFETY_S)  # a wait would show as a hang

    async def scenario() -> tuple[Server, Daemon]:
        server = Server(asyncio.get_running_loop(), skeleton_dir("tiny-llama").as_uri())
        server.pruned = {"endpoint"}
        daemon = Daemon(server, monkeypatch)
        await daemon.until(lambda: any(e[0] == "status" for e in server.log))
        await daemon.until(lambda: server.body.meta["resourceVersion"] == "8")
        STATE.wakeups.wake(KEY, Trigger.RAYCLUSTER)  # its write changes nothing
        await daemon.until(lambda: len(_writes(server.log)) == 2)
        await daemon.settle(2)
        return server, daemon

    server, daemon = asyncio.run(scenario())
    assert _writes(server.log) == [("status", "7", 1), ("status", "8", 1), ("status", "8", 1)]
    assert ("newer", "8") not in daemon.waited
    assert server.resource_version == "8"
