"""Node affinity that pins worker pods to a pool and keeps them off nodes whose driver is too
old for the image: GPU Feature Discovery's driver labels compared as integers.

GFD publishes the driver under ``cuda.driver-version.{major,minor,revision}`` and, on older
releases, only under the deprecated ``cuda.driver.{major,minor,rev}``; pools are discovered from
either, so the affinity matches either (terms are ORed). A whole-GPU plan never lands on a
time-sliced ``-SHARED`` node, and a shared plan only on nodes with the share it was planned for.
"""

from __future__ import annotations

from typing import Any

from ridgeline.compat.cuda_driver import parse_version

GFD = "nvidia.com/"
# (prefix, revision key) of each label set GFD has published.
DRIVER_LABELS = (("cuda.driver-version", "revision"), ("cuda.driver", "rev"))


def _expr(key: str, op: str, values: list[str]) -> dict[str, Any]:
    return {"key": key, "operator": op, "values": values}


def _driver_terms(prefix: str, rev_key: str, driver: str) -> list[list[dict[str, Any]]]:
    """driver >= M.m.r as (major > M) or (major = M and minor > m) or
    (major = M and minor = m and revision >= r)."""
    major, minor, revision = (*parse_version(driver), 0, 0)[:3]
    key = f"{GFD}{prefix}"
    return [
        [_expr(f"{key}.major", "Gt", [str(major)])],
        [_expr(f"{key}.major", "In", [str(major)]), _expr(f"{key}.minor", "Gt", [str(minor)])],
        [
            _expr(f"{key}.major", "In", [str(major)]),
            _expr(f"{key}.minor", "In", [str(minor)]),
            _expr(f"{key}.{rev_key}", "Gt", [str(revision - 1)]),
        ],
    ]


def gpu_node_affinity(
    product: str, min_driver: str | None, shared_by: int | None = None
) -> dict[str, Any]:
    base = [_expr(f"{GFD}gpu.product", "In", [product])]
    if shared_by:
        base.append(_expr(f"{GFD}gpu.replicas", "In", [str(shared_by)]))
    if not min_driver:
        return _affinity([base])
    terms = [
        [*base, *term]
        for prefix, rev_key in DRIVER_LABELS
        for term in _driver_terms(prefix, rev_key, min_driver)
    ]
    return _affinity(terms)


def _affinity(terms: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": t} for t in terms]
            }
        }
    }


def label_node_affinity(node_labels: dict[str, str]) -> dict[str, Any]:
    """A declared pool's nodes by the labels its node template carries: a node that scales up
    from zero has them when the scheduler (and Cluster Autoscaler or Karpenter, which simulate
    it) first sees it, before GFD has labelled anything. The driver is the declared one."""
    return _affinity([[_expr(k, "In", [v]) for k, v in sorted(node_labels.items())]])
