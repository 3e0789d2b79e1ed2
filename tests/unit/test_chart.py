"""The chart's files: the CRD copy, the documented values, the dashboards' queries."""

from __future__ import annotations

import json
import re

from ridgeline_dev.chart_docs import render, undocumented
from tests.conftest import REPO

CHART = REPO / "charts" / "ridgeline"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
METRIC = re.compile(r"\b((?:ray_ridgeline|ridgeline_operator|ridgeline_node_cache)_[a-z_]+)\b")


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((panel["title"], target["expr"]))
    return out


def dashboard_metrics() -> set[str]:
    return {m for _, expr in dashboard_exprs() for m in METRIC.findall(expr)}


def test_chart_crd_is_identical_to_crds_dir() -> None:
    assert (CHART / "crds" / "ridgeline.dev_inferencemodels.yaml").read_bytes() == (
        REPO / "crds" / "ridgeline.dev_inferencemodels.yaml"
    ).read_bytes(), "run `make crds`"


def test_every_value_is_documented_and_the_readme_is_current() -> None:
    assert undocumented((CHART / "values.yaml").read_text()) == []
    assert (CHART / "README.md").read_text() == render(), "run `make chart-docs`"


def test_replica_autoscaling_dashboard_has_the_panels_sres_need() -> None:
    titles = [t for t, _ in dashboard_exprs()]
    for needed in (
        "Desired vs ready replicas",
        "Ongoing requests vs autoscaling target",
        "Queue depth",
        "Batch size vs planned batch target",
        "Time to first token",
        "Time per output token",
        "predicted by the planner vs observed",
        "GPUs in use",
        "Weight load time",
        "Engine step time vs the plan's",
        "KV cache: held vs planned",
        "Sequences running and waiting",
        "Tokens per engine step",
    ):
        assert any(needed in t for t in titles), needed
    dash = json.loads(DASHBOARDS[0].read_text())
    assert {v["name"] for v in dash["templating"]["list"]} >= {"namespace", "model"}
    for _, expr in dashboard_exprs():
        assert 'namespace=~"$namespace"' in expr
        assert 'model=~"$model"' in expr


def test_image_catalogs_agree() -> None:
    """images/serving/variants.txt (what `make images` builds), the chart's default catalog and
    `ridgeline render`'s default catalog name the same images."""
    import yaml

    from ridgeline.platform_config import DEFAULT_IMAGES

    built = {}
    for line in (REPO / "images" / "serving" / "variants.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            tag, cuda, torch, _index = line.split()
            built[f"ghcr.io/ridgeline/serving:0.1.0-{tag}"] = (
                None if cuda == "-" else ".".join(cuda.split(".")[:2]),
                torch,
            )
    chart = {
        i["image"]: (i.get("cuda"), i["torch"])
        for i in yaml.safe_load((CHART / "values.yaml").read_text())["serving"]["images"]
    }
    default = {i.image: (i.cuda, i.torch) for i in DEFAULT_IMAGES}
    assert built == chart == default


def test_every_platform_config_key_is_a_chart_value_with_a_schema() -> None:
    """The ConfigMap is `serving` plus `nodePools` and `nodeCache`: every PlatformConfig key is
    settable from values.yaml, checked by the schema, and the defaults load as the operator's
    config."""
    import yaml

    from ridgeline.platform_config import PlatformConfig

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    fields = {f.alias or name for name, f in PlatformConfig.model_fields.items()}
    assert set(values["serving"]) | {"nodePools", "nodeCache"} == fields
    assert set(schema["properties"]["serving"]["properties"]) == set(values["serving"])
    config = PlatformConfig.model_validate({**values["serving"], "nodePools": values["nodePools"]})
    assert config.weights_cache_volume == "emptyDir"
    assert config.network_policy.enabled
    assert config.ray_token_auth
    assert config.upgrade_strategy == "Recreate"
