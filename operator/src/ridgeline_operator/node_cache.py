"""The operator's edge of the node weight cache (issue 24).

Reports: the agents write one ConfigMap per node in their namespace; the operator lists them
there every few seconds (a labelled list in one namespace, which a Role allows: a kopf index
would watch ConfigMaps cluster-wide and need a ClusterRole that reads every ConfigMap), keeps
the latest, and wakes the models whose checkpoint a report changed (the report names them).
The reconcile reads the reports from memory.

Volumes: a model's PersistentVolume and claim are created, if missing, on every pass that
renders them, before its RayService is applied (the pods name the claim); once it is applied,
the model's volumes of an earlier URI go. A model's volumes go when it is deleted (the claim
also by its owner reference); a task beside the poll sweeps volumes whose model went unseen
(node_cache_sweep)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ridgeline.api.inference_model import GROUP, PLURAL, VERSION
from ridgeline.api.node_cache import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REPORT_COMPONENT,
    REPORT_KEY,
    NodeCacheReport,
)
from ridgeline.platform_config import PlatformConfig
from ridgeline.render import node_cache as render
from ridgeline.render.meta import MODEL_LABEL
from ridgeline_operator import node_cache_sweep
from ridgeline_operator.kube import REQUEST_TIMEOUT_S, as_kopf_error
from ridgeline_operator.wakeups import Key, Trigger

REPORT_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={REPORT_COMPONENT}"
# Reports change at most every few seconds while a node fills (the agent's own pace).
POLL_S = 5.0
# A PersistentVolume left Released by an earlier claim is deleted and made again: retry after.
RELEASED_RETRY_S = 2.0
# A volume or claim still being deleted (a claim waits for the pods that mount it): retry after.
TERMINATING_RETRY_S = 5.0

log = logging.getLogger(__name__)


def _keys(models: Iterable[str]) -> set[Key]:
    out = set()
    for model in models:
        namespace, _, name = model.partition("/")
        if name:
            out.add((namespace, name))
    return out


def changed_models(
    old: Mapping[str, NodeCacheReport], new: Mapping[str, NodeCacheReport]
) -> set[Key]:
    """The models named by a checkpoint entry that differs between two sets of reports (a
    report's own timestamp or usage wakes nobody)."""
    woken: set[Key] = set()
    for node in old.keys() | new.keys():
        before = old[node].checkpoints if node in old else {}
        after = new[node].checkpoints if node in new else {}
        for directory in before.keys() | after.keys():
            was, now = before.get(directory), after.get(directory)
            if was != now:
                woken |= _keys([*(was.models if was else []), *(now.models if now else [])])
    return woken


def parse_reports(
    configmaps: Iterable[tuple[str, Mapping[str, str]]],
) -> dict[str, NodeCacheReport]:
    """Reports by ConfigMap name; one that does not parse is left out, with a warning."""
    out = {}
    for name, data in configmaps:
        try:
            out[name] = NodeCacheReport.model_validate_json(data.get(REPORT_KEY) or "")
        except ValidationError as exc:
            log.warning("node cache report %s does not parse, ignored: %s", name, exc)
    return out


class Reports:
    """The latest report of each node. ``snapshot`` is called from reconcile threads."""

    def __init__(self) -> None:
        self._by_name: dict[str, NodeCacheReport] = {}
        self._loaded = False
        self._lock = threading.Lock()
        # Held across the first list: the other threads' first passes wait for it rather than
        # see no reports (Cached=False, NoAgent, a Warning Event) that no later list corrects
        # until the resync, as the poll finds nothing changed since.
        self._first = threading.Lock()

    def replace(self, reports: dict[str, NodeCacheReport]) -> set[Key]:
        """Keep ``reports``; returns the models whose checkpoints changed."""
        with self._lock:
            old, self._by_name, self._loaded = self._by_name, reports, True
        return changed_models(old, reports)

    def snapshot(self, api: Any, config: PlatformConfig) -> tuple[NodeCacheReport, ...]:
        """The reports (none with the node cache disabled). The first call lists them, so the
        first reconciles after a start do not report NoAgent for a moment; where that fails,
        the poll's next list wakes the models (no list per reconcile meanwhile)."""
        if not config.node_cache.enabled:
            return ()
        if not self._loaded:
            with self._first:
                if not self._loaded:  # another thread's first list may have landed meanwhile
                    self._load(api, config.node_cache.namespace)
        with self._lock:
            return tuple(self._by_name[name] for name in sorted(self._by_name))

    def _load(self, api: Any, namespace: str) -> None:
        try:
            self.replace(list_reports(api, namespace))
        except Exception as exc:  # a timeout, a dropped connection: the poll lists again
            log.warning("node cache reports unreadable for now: %s", _error(exc))
            with self._lock:
                self._loaded = True


def _error(exc: Exception) -> str:
    if isinstance(exc, ApiException):  # its str() carries the headers and body
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


REPORTS = Reports()


def list_reports(api: Any, namespace: str) -> dict[str, NodeCacheReport]:
    listed: Any = client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=REPORT_SELECTOR, _request_timeout=REQUEST_TIMEOUT_S
    )
    return parse_reports((item.metadata.name, item.data or {}) for item in listed.items)


# ---- volumes ----------------------------------------------------------------------------------


def create_volumes(api: Any, manifests: Iterable[dict[str, Any]]) -> None:
    """Each PersistentVolume and claim, if missing (one read each where they exist: this runs
    on every pass). Never updated: a claim's size cannot shrink, and a volume's path cannot
    change (a new URI is a new volume). One still being deleted is not taken for the new one:
    the pass is retried once it is gone, then creates it."""
    manifests = list(manifests)
    if not manifests:  # the node cache is disabled
        return
    core = client.CoreV1Api(api)
    for manifest in manifests:
        meta, kind = manifest["metadata"], manifest["kind"]
        what = f"{kind} {meta.get('namespace', '')}/{meta['name']}"
        try:
            existing = _read(core, kind, meta)
            if existing is None:
                _create(core, kind, meta, manifest)
                continue
        except ApiException as exc:
            raise as_kopf_error(exc, f"create {what}") from exc
        if existing.metadata.deletion_timestamp is not None:
            raise kopf.TemporaryError(
                f"{what} is being deleted: made again once it is gone", delay=TERMINATING_RETRY_S
            )
        if kind == "PersistentVolume":
            _replace_if_released(core, meta["name"], existing)


def _read(core: client.CoreV1Api, kind: str, meta: Mapping[str, Any]) -> Any:
    """The object as it is, or None if missing."""
    try:
        if kind == "PersistentVolume":
            return core.read_persistent_volume(meta["name"], _request_timeout=REQUEST_TIMEOUT_S)
        return core.read_namespaced_persistent_volume_claim(
            meta["name"], meta["namespace"], _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _create(core: client.CoreV1Api, kind: str, meta: Mapping[str, Any], body: Any) -> None:
    """Create; a 409 is another pass's create that came first (the next pass reads it)."""
    try:
        if kind == "PersistentVolume":
            core.create_persistent_volume(body, _request_timeout=REQUEST_TIMEOUT_S)
        else:
            core.create_namespaced_persistent_volume_claim(
                meta["namespace"], body, _request_timeout=REQUEST_TIMEOUT_S
            )
    except ApiException as exc:
        if exc.status != 409:
            raise


def _replace_if_released(core: client.CoreV1Api, name: str, existing: Any) -> None:
    """A volume whose claim went (an admin deleted the claim, which is made again under the
    same name) stays Released and would never bind the new claim: delete it and create it on
    the retry."""
    if existing.status is None or existing.status.phase != "Released":
        return
    try:
        core.delete_persistent_volume(name, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status != 404:
            raise as_kopf_error(exc, f"replace released PersistentVolume {name}") from exc
    raise kopf.TemporaryError(
        f"PersistentVolume {name} was released by an earlier claim: made again",
        delay=RELEASED_RETRY_S,
    )


def prune_volumes(api: Any, manifests: Iterable[dict[str, Any]]) -> None:
    """After an apply: the model's claims and volumes other than these (an earlier URI's).
    Kubernetes keeps a claim a pod still mounts, and its volume, until the pod is gone."""
    manifests = list(manifests)
    if not manifests:
        return
    core = client.CoreV1Api(api)
    for manifest in manifests:
        meta = manifest["metadata"]
        labels = meta["labels"]
        selector = ",".join(
            f"{k}={labels[k]}" for k in (COMPONENT_LABEL, render.MODEL_NAMESPACE_LABEL, MODEL_LABEL)
        )
        try:
            if manifest["kind"] == "PersistentVolume":
                listed: Any = core.list_persistent_volume(
                    label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
                )
                for item in listed.items:
                    if item.metadata.name != meta["name"]:
                        _delete(core, "PersistentVolume", item.metadata.name)
            else:
                ns = meta["namespace"]
                listed = core.list_namespaced_persistent_volume_claim(
                    ns, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
                )
                for item in listed.items:
                    if item.metadata.name != meta["name"]:
                        _delete(
                            core, "PersistentVolumeClaim", item.metadata.name, meta["namespace"]
                        )
        except ApiException as exc:
            raise as_kopf_error(exc, f"list the volumes of {labels[MODEL_LABEL]}") from exc


def _delete(core: client.CoreV1Api, kind: str, name: str, namespace: str | None = None) -> None:
    try:
        if namespace is None:
            core.delete_persistent_volume(name, _request_timeout=REQUEST_TIMEOUT_S)
        else:
            core.delete_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
    except ApiException as exc:
        if exc.status != 404:  # already gone is what we wanted
            raise as_kopf_error(exc, f"delete {kind} {namespace or ''}/{name}") from exc
    log.info(
        "deleted %s %s%s (the model's URI changed)",
        kind,
        f"{namespace}/" if namespace else "",
        name,
    )


def delete_model_volumes(api: Any, namespace: str, name: str) -> int:
    """Every PersistentVolume of a deleted model; returns how many this call deleted. One
    already gone is passed over, and one that fails otherwise is logged: neither keeps the
    others."""
    core = client.CoreV1Api(api)
    selector = (
        f"{COMPONENT_LABEL}={render.COMPONENT},"
        f"{render.MODEL_NAMESPACE_LABEL}={namespace},{MODEL_LABEL}={name}"
    )
    listed: Any = core.list_persistent_volume(
        label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
    )
    deleted = 0
    for item in listed.items:
        volume = item.metadata.name
        try:
            core.delete_persistent_volume(volume, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("deleting PersistentVolume %s: %s", volume, _error(exc))
            continue
        except Exception as exc:  # a timeout, a dropped connection: the others still go
            log.warning("deleting PersistentVolume %s: %s", volume, _error(exc))
            continue
        deleted += 1
    return deleted


# ---- kopf -------------------------------------------------------------------------------------
# The handlers read the operator's state at call time: reconcile imports this module (through
# children), so it cannot import reconcile at the top.

_tasks: set[asyncio.Task[None]] = set()


async def _poll() -> None:
    from ridgeline_operator.reconcile import STATE

    while True:
        await asyncio.sleep(POLL_S)
        cache = STATE.config.node_cache
        if not cache.enabled or STATE.api is None:
            continue
        try:
            reports = await asyncio.to_thread(list_reports, STATE.api, cache.namespace)
        except Exception as exc:  # a timeout or a dropped connection must not end the poll
            log.warning("listing node cache reports: %s", _error(exc))
            continue
        for key in REPORTS.replace(reports):
            STATE.wakeups.wake(key, Trigger.NODE_CACHE)


@kopf.on.startup()
async def start_report_poll(**_: Any) -> None:
    """The report poll, and the sweep of orphaned volumes in a task of its own (a slow sweep
    never delays the reports)."""
    for loop in (_poll(), node_cache_sweep.sweep_loop()):
        task = asyncio.create_task(loop)
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


@kopf.on.cleanup()
async def stop_report_poll(**_: Any) -> None:
    for task in list(_tasks):
        task.cancel()


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def delete_volumes(*, namespace: str | None, name: str, **_: Any) -> None:
    """The model's PersistentVolumes (cluster-scoped: no owner reference reaches them). The
    node's files stay; the agent frees them after its grace period. Logged on this module's
    logger: kopf's per-object one is at WARNING unless --verbose."""
    from ridgeline_operator.reconcile import STATE

    if not STATE.config.node_cache.enabled:
        return
    try:
        deleted = delete_model_volumes(STATE.api, namespace or "", name)
    except Exception as exc:  # a leftover volume must not hold the model's deletion
        log.warning("deleting the node cache volumes of %s/%s: %s", namespace, name, _error(exc))
        return
    if deleted:
        log.info("deleted %d node cache PersistentVolume(s) of %s/%s", deleted, namespace, name)
