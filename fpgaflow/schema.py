"""Generated files: the CRD (openAPIV3Schema) and the CLI's JSON schema from the spec model, and the dashboards.

``make generate`` (``fpgaflow generate``) writes them; a test fails when a committed copy is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fpgaflow.spec import API_VERSION, Experiment, ExperimentSpec

GROUP, VERSION = API_VERSION.split("/")
CRD_PATH = Path("charts/fpgaflow/crds/experiments.fpgaflow.io.yaml")
JSON_SCHEMA_PATH = Path("schemas/experiment.schema.json")
_DROP = {"title", "examples", "default_factory"}


def _inline(node: Any, defs: dict) -> Any:
    """Resolve $refs and turn pydantic's JSON schema into a Kubernetes structural schema."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **extra}, defs)
    options = node.get("anyOf")
    if options is not None:
        non_null = [o for o in options if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(non_null) == 1:  # Optional[X]
            merged = {**_inline(non_null[0], defs), **_inline(rest, defs)}
            merged["nullable"] = True
            return merged
        # a scalar union (sweep values): Kubernetes cannot type it, so it is kept as given
        return {**_inline(rest, defs), "x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs" or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):  # to OpenAPI 3.0's form
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; validation happens in the model
        out[key] = _inline(value, defs)
    if out.get("enum") and "type" not in out:
        out["type"] = "string"
    return out


def spec_openapi_schema() -> dict:
    schema = ExperimentSpec.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _inline(schema, defs)


def crd() -> dict:
    status = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    spec_schema = spec_openapi_schema()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"experiments.{GROUP}", "labels": {"app.kubernetes.io/part-of": "fpgaflow"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "experiments", "singular": "experiment", "kind": "Experiment", "shortNames": ["exp", "fx"]},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Trials", "type": "string", "jsonPath": ".status.trialsSummary"},
                        {"name": "Best accuracy", "type": "number", "jsonPath": ".status.bestAccuracy"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An fpgaflow Experiment: train, convert with hls4ml, serve and benchmark.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def json_schema() -> dict:
    schema = Experiment.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://{GROUP}/schemas/experiment-{VERSION}.json"
    return schema


def rendered() -> dict[Path, str]:
    """Every generated file of the repository, by path: the CRD, the JSON schema, the dashboards."""
    from fpgaflow import dashboards

    header = "# Generated from fpgaflow.spec by `make generate`; do not edit.\n"
    return {
        CRD_PATH: header + yaml.safe_dump(crd(), sort_keys=False, width=120),
        JSON_SCHEMA_PATH: json.dumps(json_schema(), indent=2) + "\n",
        **dashboards.rendered(),
    }


def write_generated(root: Path) -> list[Path]:
    written = []
    for rel, text in rendered().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
