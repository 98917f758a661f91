"""Generated files must match the spec model they come from."""

import yaml

from fpgaflow.schema import CRD_PATH, JSON_SCHEMA_PATH, rendered
from tests.conftest import ROOT


def test_generated_files_are_fresh():
    for rel, text in rendered().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `make generate`"


def test_crd_carries_the_constraints_the_api_server_enforces():
    crd = yaml.safe_load((ROOT / CRD_PATH).read_text())
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["hls"]["properties"]["reuseFactor"]["minimum"] == 1
    assert spec["serve"]["properties"]["targets"]["items"]["enum"] == ["cpu", "gpu", "fpga"]
    assert "ap_u?fixed" in spec["hls"]["properties"]["precision"]["pattern"]
    assert version["subresources"] == {"status": {}}

    def no_refs(node):
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node
            for value in node.values():
                no_refs(value)
        elif isinstance(node, list):
            for value in node:
                no_refs(value)

    no_refs(crd)


def test_json_schema_names_the_manifest_fields():
    import json

    schema = json.loads((ROOT / JSON_SCHEMA_PATH).read_text())
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"])


def test_grpc_stubs_are_fresh(tmp_path):
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "protos"))
    from generate import PACKAGES

    # protoc runs in its own process: its compiler and TensorFlow's protobuf runtime cannot share one
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True, capture_output=True)
    for package, folder in PACKAGES.values():
        fresh = {p.name: p.read_text() for p in (tmp_path / package.replace(".", "/")).glob("*_pb2*")}
        assert fresh, f"no stubs were generated for {package}"
        for name, text in fresh.items():
            assert (ROOT / folder / name).read_text() == text, f"{folder / name} is stale: run `make proto`"


def test_v2_stubs_import_through_the_package():
    from fpgaflow_inference.v2 import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    assert grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == "inference.GRPCInferenceService"
    assert hasattr(grpc_predict_v2_pb2_grpc, "GRPCInferenceServiceStub")


def test_the_inference_pins_admit_no_runtime_older_than_the_stubs_need():
    """The v2 stubs refuse at import a grpcio or protobuf older than the ones that generated them; the
    inference distribution's floors are those versions, and `make proto` uses the same grpcio-tools."""
    import re

    stubs = ROOT / "services" / "inference" / "fpgaflow_inference" / "v2"
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (stubs / "grpc_predict_v2_pb2_grpc.py").read_text())[1]
    protobuf_version = re.search(r"Protobuf Python Version: ([\d.]+)", (stubs / "grpc_predict_v2_pb2.py").read_text())[1]
    pins = (ROOT / "services" / "inference" / "pyproject.toml").read_text()
    assert f'"grpcio>={grpc_version},' in pins
    assert f'"grpcio-health-checking>={grpc_version},' in pins and f'"grpcio-reflection>={grpc_version},' in pins
    assert f'"protobuf>={protobuf_version},' in pins
    assert f'"grpcio-tools=={grpc_version}"' in (ROOT / "pyproject.toml").read_text()
