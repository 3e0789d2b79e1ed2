"""Who to reconcile, and when.

Each InferenceModel has one waiting daemon, the one writer of its status: a change of its spec
wakes it, a RayService or RayCluster event wakes its owner, a pool change wakes the models
planned on that pool (and those with no plan yet), and a slow resync, spread at random over its
period, wakes each on its own. All in memory: nothing is written to the API server to trigger a
reconcile."""

from __future__ import annotations

import asyncio
import enum
import random
import threading
from collections.abc import Iterable
from typing import Any

Key = tuple[str, str]  # namespace, name


class Trigger(enum.StrEnum):
    SPEC = "spec"  # the InferenceModel changed (kopf's change handlers), or its daemon started
    RAYSERVICE = "rayservice"
    RAYCLUSTER = "raycluster"
    POOLS = "pools"
    NODE_CACHE = "node_cache"  # a node cache agent's report on the model's checkpoint changed
    RESYNC = "resync"
    RETRY = "retry"  # a pass failed, or its status write met a newer object (409)


def first_resync_s(period_s: float) -> float:
    """The first resync lands anywhere in the second period: a model was just reconciled
    when its daemon started (created, or resumed at the operator's start), so a resync within
    the first period would repeat that pass while a thousand models are still converging;
    spread over a whole period, a thousand models that started together never resync
    together."""
    return random.uniform(period_s, 2.0 * period_s)


def next_resync_s(period_s: float) -> float:
    return period_s * random.uniform(0.9, 1.1)


class Waker:
    """One model's wake-up call: what woke it since it last woke (several wakes before it
    runs make one pass), and the resourceVersion its last pass started from."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._triggers: set[Trigger] = set()
        self.started_from: str | None = None

    def wake(self, trigger: Trigger) -> None:
        self._triggers.add(trigger)
        self._event.set()

    async def wait(
        self, timeout_s: float, stopping: asyncio.Future[Any] | None = None
    ) -> frozenset[Trigger]:
        """What woke it; RESYNC when the timeout passed first; nothing when ``stopping``
        completed first (the daemon is asked to exit)."""
        woken = asyncio.ensure_future(self._event.wait())
        waits: set[asyncio.Future[Any]] = {woken} if stopping is None else {woken, stopping}
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if stopping is not None and stopping.done():
            return frozenset()
        if not self._event.is_set():
            return frozenset({Trigger.RESYNC})
        return self.drain()

    def drain(self) -> frozenset[Trigger]:
        """What woke it since it last woke, and forget it: a pass about to read the object
        covers every wake before it."""
        self._event.clear()
        triggers, self._triggers = frozenset(self._triggers), set()
        return triggers


class Wakeups:
    """The wakers of the models this operator follows, and the pool each is planned on.
    ``planned_on`` is called from reconcile threads; everything else runs on the event loop."""

    def __init__(self) -> None:
        self._wakers: dict[Key, Waker] = {}
        self._pools: dict[Key, str | None] = {}
        self._lock = threading.Lock()

    def register(self, key: Key) -> Waker:
        waker = self._wakers[key] = Waker()
        return waker

    def unregister(self, key: Key, waker: Waker) -> None:
        if self._wakers.get(key) is waker:
            del self._wakers[key]

    def forget(self, key: Key) -> None:
        with self._lock:
            self._pools.pop(key, None)

    def planned_on(self, key: Key, pool: str | None) -> None:
        with self._lock:
            self._pools[key] = pool

    def wake(self, key: Key, trigger: Trigger) -> bool:
        waker = self._wakers.get(key)
        if waker is None:
            return False
        waker.wake(trigger)
        return True

    def wake_spec(self, key: Key, resource_version: str | None) -> bool:
        """Wake the model for a spec at ``resource_version``, unless its last pass started
        from that very object (a daemon that started while kopf was handling it)."""
        waker = self._wakers.get(key)
        if waker is None or (resource_version and waker.started_from == resource_version):
            return False
        waker.wake(Trigger.SPEC)
        return True

    def wake_pools(self, changed: Iterable[str]) -> int:
        """Wake the models planned on a changed pool, and those without a plan (a new pool may
        make them feasible). Returns how many were woken."""
        changed = set(changed)
        if not changed:
            return 0
        with self._lock:
            keys = [k for k, pool in self._pools.items() if pool is None or pool in changed]
        return sum(self.wake(k, Trigger.POOLS) for k in keys)
