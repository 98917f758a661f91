"""The real node (tests/cluster/node): pods run in their containers from the project's images, reach the API
server through the kubernetes Service under their ServiceAccount, resolve cluster names through CoreDNS,
and mount the artifacts volume; stopping it leaves no pod, process or mount behind."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PROBE = """
import json, socket, kubernetes
kubernetes.config.load_incluster_config()
pods = kubernetes.client.CoreV1Api().list_namespaced_pod("probe")
open("/artifacts/probe.json", "w").write(json.dumps({
    "pods": [p.metadata.name for p in pods.items],
    "dns": socket.gethostbyname("kubernetes.default.svc.cluster.local"),
}))
"""


def test_a_job_runs_in_its_container_on_the_real_node(real_cluster):
    plane, node = real_cluster
    artifacts = node.local_volume("probe-artifacts", claim=("probe", "artifacts"))
    image = "docker.io/fpgaflow/operator:0.1.0"
    plane.kubectl("create", "namespace", "probe")
    plane.kubectl("-n", "probe", "create", "serviceaccount", "probe")
    plane.kubectl("-n", "probe", "create", "rolebinding", "probe", "--clusterrole=view", "--serviceaccount=probe:probe")
    plane.kubectl("-n", "probe", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "artifacts"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}))
    plane.kubectl("-n", "probe", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "probe", "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "probe", "image": image, "imagePullPolicy": "Never",
                            "command": ["python", "-c", PROBE],
                            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}]}],
            "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}]}}}}))
    deadline = time.monotonic() + 180
    while True:
        status = json.loads(plane.kubectl("-n", "probe", "get", "job", "probe", "-o", "json").stdout).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Complete") == "True" or conditions.get("Failed") == "True":
            break
        assert time.monotonic() < deadline, (status, plane.kubectl("-n", "probe", "describe", "pods").stdout[-3000:])
        time.sleep(1)
    assert conditions.get("Complete") == "True", plane.kubectl("-n", "probe", "logs", "job/probe", check=False).stdout
    found = json.loads((artifacts / "probe.json").read_text())
    assert any(name.startswith("probe-") for name in found["pods"])
    assert found["dns"] == "10.96.0.1"  # the kubernetes Service, resolved by CoreDNS
