"""kopf's diff base, built only for what has change handlers: InferenceModels, sans status.

kopf builds a diff base for every event of every kind it watches: a deep copy of the whole
object, status included (dropped only after the copy). Ridgeline's Node, RayService and
RayCluster handlers are event and index handlers that never read a diff, and a Node's status
is most of the Node: at 500 kwok nodes refreshing their heartbeats, those copies were a third
of the idle operator's CPU (py-spy; docs/benchmarks.md, "Operator"). An InferenceModel's status
(the plan and its options, ~7 kB) is dropped before the copy too."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

from ridgeline.api.inference_model import GROUP

KIND = "InferenceModel"


def _is_model(body: kopf.Body) -> bool:
    return body.get("kind") == KIND and str(body.get("apiVersion", "")).startswith(f"{GROUP}/")


class ModelsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if not _is_model(body):
            return kopf.BodyEssence()
        fields = list(extra_fields or [])
        if any("status" in str(f) for f in fields):  # a handler that reads status changes
            return super().build(body=body, extra_fields=fields)
        # kopf drops the status after its copy; dropped before it here
        raw = cast(kopf.RawBody, {k: v for k, v in body.items() if k != "status"})
        return super().build(body=kopf.Body(raw), extra_fields=fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return super().fetch(body=body) if _is_model(body) else None
