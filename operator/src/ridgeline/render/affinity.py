"""Node affinity that pins worker pods to a pool and keeps them off nodes whose driver is too
old for the image: GPU Feature Discovery's driver labels compared as integers."""

from __future__ import annotations

from typing import Any

from ridgeline.compat.cuda_driver import parse_version

GFD = "nvidia.com/"


def _expr(key: str, op: str, values: list[str]) -> dict[str, Any]:
    return {"key": key, "operator": op, "values": values}


def gpu_node_affinity(product: str, min_driver: str | None) -> dict[str, Any]:
    """Terms are ORed, expressions in a term ANDed: driver >= M.m.r becomes
    (major > M) or (major = M and minor > m) or (major = M and minor = m and revision >= r)."""
    products = [product, f"{product}-SHARED"] if not product.endswith("-SHARED") else [product]
    base = [_expr(f"{GFD}gpu.product", "In", products)]
    if not min_driver:
        return _affinity([base])
    major, minor, revision = (*parse_version(min_driver), 0, 0)[:3]
    key = f"{GFD}cuda.driver-version"
    terms = [
        [*base, _expr(f"{key}.major", "Gt", [str(major)])],
        [
            *base,
            _expr(f"{key}.major", "In", [str(major)]),
            _expr(f"{key}.minor", "Gt", [str(minor)]),
        ],
        [
            *base,
            _expr(f"{key}.major", "In", [str(major)]),
            _expr(f"{key}.minor", "In", [str(minor)]),
            _expr(f"{key}.revision", "Gt", [str(revision - 1)]),
        ],
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
