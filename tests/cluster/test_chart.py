"""The Helm chart and the CRD against a real kube-apiserver."""

from __future__ import annotations

import pytest
import yaml

from fpgaflow.dashboards import DASHBOARD_PATH
from tests.cluster.conftest import NAMESPACE
from tests.conftest import ROOT

pytestmark = pytest.mark.cluster


def test_helm_lint_is_clean(helm):
    done = helm("lint", "charts/fpgaflow", "--strict")
    assert "0 chart(s) failed" in done.stdout


@pytest.fixture(scope="module")
def monitoring_crds(control_plane):
    """The Prometheus Operator's ServiceMonitor and PodMonitor CRDs (make envtest takes them from its module)."""
    for crd in sorted((ROOT / ".cache" / "envtest" / "crds").glob("monitoring.coreos.com_*.yaml")):
        control_plane.kubectl("apply", "--server-side", "-f", str(crd))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com")


def test_rendered_objects_pass_the_api_servers_validation(control_plane, helm, monitoring_crds):
    rendered = helm("template", "fpgaflow", "charts/fpgaflow", "--namespace", "default",
                    "--set", "serviceMonitor.enabled=true,podMonitor.enabled=true").stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PersistentVolumeClaim", "PodMonitor",
                     "Role", "RoleBinding", "ServiceAccount", "ServiceMonitor"]
    # server-side dry run: every object is checked against the Kubernetes schemas, nothing is stored
    done = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert done.stdout.count("(server dry run)") == len(kinds)


def test_values_are_checked_against_the_schema(helm):
    done = helm("template", "fpgaflow", "charts/fpgaflow", "--set", "operator.maxRunningTrials=0", check=False)
    assert done.returncode != 0 and "maxRunningTrials" in done.stderr


def test_operator_deployment_is_locked_down(helm):
    rendered = helm("template", "fpgaflow", "charts/fpgaflow").stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_dashboards_ship_as_configmaps_for_grafanas_sidecar(helm):
    rendered = helm("template", "fpgaflow", "charts/fpgaflow", "--set", "dashboards.annotations.grafana_folder=fpgaflow").stdout
    maps = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap"]
    assert len(maps) == len(list((ROOT / "charts/fpgaflow/dashboards").glob("*.json"))) == 1
    assert maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert maps[0]["metadata"]["annotations"] == {"grafana_folder": "fpgaflow"}
    assert maps[0]["data"]["fpgaflow-comparison.json"] == (ROOT / DASHBOARD_PATH).read_text().rstrip("\n")
    off = helm("template", "fpgaflow", "charts/fpgaflow", "--set", "dashboards.enabled=false").stdout
    assert "kind: ConfigMap" not in off


def test_helm_install_and_the_examples_apply(control_plane, installed):
    crds = control_plane.kubectl("get", "crd", "experiments.fpgaflow.io", "-o", "name").stdout
    assert "experiments.fpgaflow.io" in crds
    done = control_plane.kubectl("apply", "-n", NAMESPACE, "--dry-run=server", "-f", str(ROOT / "examples"))
    assert done.stdout.count("created (server dry run)") == len(list((ROOT / "examples").glob("*.yaml")))


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"hls": {"reuseFactor": "many"}}, "spec.hls.reuseFactor"),
        ({"serve": {"targets": ["tpu"]}}, "spec.serve.targets[0]"),
        ({"hls": {"reuseFactor": 0}}, "spec.hls.reuseFactor"),
        ({"hls": {"precision": "float16"}}, "spec.hls.precision"),
    ],
)
def test_a_bad_manifest_is_refused_by_the_api_server(control_plane, installed, spec, words):
    manifest = {"apiVersion": "fpgaflow.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "bad"}, "spec": spec}
    done = control_plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert done.returncode != 0
    assert words in done.stderr, done.stderr


@pytest.mark.parametrize("verb, resource, allowed", [
    ("create", "jobs.batch", True), ("create", "deployments.apps", True), ("create", "services", True),
    ("patch", "experiments.fpgaflow.io/status", True), ("list", "namespaces", True),
    ("delete", "jobs.batch", False), ("delete", "experiments.fpgaflow.io", False), ("get", "secrets", False),
    ("create", "pods", False),
])
def test_the_operators_service_account_has_least_privilege(control_plane, installed, verb, resource, allowed):
    subresource = resource.split("/")[1:] and ["--subresource", resource.split("/")[1]]
    done = control_plane.kubectl("auth", "can-i", verb, resource.split("/")[0], *subresource, "-n", NAMESPACE,
                                 "--as", f"system:serviceaccount:{NAMESPACE}:fpgaflow-operator", check=False)
    assert (done.stdout.strip() == "yes") is allowed, (verb, resource, done.stdout, done.stderr)
