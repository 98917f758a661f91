"""A real single Kubernetes node on this machine, beside a ControlPlane with real pods: containerd (Debian's,
with runc and the CNI plugins) runs the pods that the kubelet (built from the same pinned Kubernetes release as
the API server: `make node`) is given; kube-proxy makes Services reach them, kube-scheduler places them, and
CoreDNS (a host process on the bridge's gateway address, the pods' name server) answers cluster names.
Everything lives in one work folder and on one bridge of its own (``fpgaflow0``, 10.244.0.0/24: the pods'
network; the API server listens on its gateway address).

    node = Node(workdir, store=Path(".cache/node/containerd")).prepare()  # the bridge (the API server binds to it)
    plane = ControlPlane(workdir / "cp", address=node.gateway, real_pods=True).start()
    node.start(plane, images=["docker.io/fpgaflow/operator:0.1.0"], podman=["podman"])
    node.local_volume("artifacts", claim=("fpgaflow", "fpgaflow-artifacts"))
    ...
    node.stop(); plane.stop(); node.remove_network()

``stop`` removes every pod it ran (their containers, mounts and network), and every process it started.
What was learned probing these machines: ../shared/notes/real-node.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fpgaflow.processes import free_port
from tests.cluster.controlplane import ControlPlane, binary, terminate

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
KUBERNETES_MODULE = "k8s.io/kubernetes@v1.34.4"  # tests/cluster/envtest/go.mod pins the same release


def _run(*cmd: str, input: bytes | None = None, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
    """A command's result; its input is ``input`` (bytes) or ``stdin`` (a pipe: an image archive streamed in)."""
    return subprocess.run(cmd, input=input, stdin=stdin, capture_output=True, check=check, timeout=1200)


@dataclass
class Node:
    workdir: Path
    # containerd's root (its images and their unpacked layers): kept between runs, so that an image is imported
    # once per build (.cache/node); the runtime's state and everything else live in the work folder
    store: Path
    name: str = "fpgaflow-node"
    bridge: str = "fpgaflow0"
    gateway: str = "10.244.0.1"
    pod_cidr: str = "10.244.0.0/24"
    service_cidr: str = "10.96.0.0/24"  # the control plane's service range
    procs: list[subprocess.Popen] = field(default_factory=list)
    plane: ControlPlane | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    # ------------------------------------------------------------------ network
    def prepare(self) -> Node:
        """The pods' bridge with the gateway address, which the API server then binds to. Nothing from it is
        forwarded off the machine, and nothing this machine sends to a Service address leaves it: a Service
        address that kube-proxy has not (or no longer) rewritten is refused here, never routed out."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if _run("ip", "link", "show", self.bridge, check=False).returncode != 0:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
        if self.gateway not in _run("ip", "-4", "addr", "show", self.bridge).stdout.decode():
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        _run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for rule in self._fences():
            if _run("iptables", "-C", *rule, check=False).returncode != 0:
                _run("iptables", "-I", *rule)
        return self

    def _fences(self) -> list[list[str]]:
        comment = ["-m", "comment", "--comment", f"fpgaflow test node {self.bridge}"]
        return [["FORWARD", "-i", self.bridge, "!", "-o", self.bridge, *comment, "-j", "DROP"],
                ["OUTPUT", "-d", self.service_cidr, *comment, "-j", "REJECT"],
                ["FORWARD", "-d", self.service_cidr, *comment, "-j", "DROP"]]

    def remove_network(self) -> None:
        _run("ip", "link", "delete", self.bridge, check=False)
        for rule in self._fences():
            _run("iptables", "-D", *rule, check=False)

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait(self, what: str, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{Path(proc.args[0]).name} exited with {proc.returncode}; see {self.workdir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout:.0f} s; see {self.workdir}")
            time.sleep(0.5)

    def ctr(self, *args: str, input: bytes | None = None, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, input=input, stdin=stdin, check=check)

    # ------------------------------------------------------------------ start
    def start(self, plane: ControlPlane, images: list[str], podman: list[str]) -> Node:
        self.plane = plane
        self._containerd()
        self._kill_containers()  # what an earlier run that was itself killed left in the kept store
        self._import([PAUSE_IMAGE, *images], podman)
        self._kubelet()
        healthz = f"127.0.0.1:{free_port()}"
        self._spawn("kube-proxy", [str(binary("kube-proxy")), "--kubeconfig", str(plane.admin_kubeconfig),
                                   "--hostname-override", self.name, "--proxy-mode", "iptables",
                                   "--cluster-cidr", self.pod_cidr, "--metrics-bind-address", f"127.0.0.1:{free_port()}",
                                   "--healthz-bind-address", healthz])
        self._wait("kube-proxy", lambda: _http_ok(f"http://{healthz}/healthz"))
        self._spawn("kube-scheduler", [str(binary("kube-scheduler")), "--kubeconfig", str(plane.admin_kubeconfig),
                                       "--leader-elect=false"])
        self._coredns()
        return self

    def _containerd(self) -> None:
        folder = self.workdir / "containerd"
        (folder / "net.d").mkdir(parents=True, exist_ok=True)
        (folder / "net.d" / "10-fpgaflow.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "fpgaflow", "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr, "gateway": self.gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(folder / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}))
        # restrict_oom_score_adj: without it every sandbox fails here (no CAP_SYS_RESOURCE); cgroupfs, not systemd
        (folder / "config.toml").write_text(f"""version = 2
root = "{self.store}"
state = "{folder / 'state'}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{folder / 'net.d'}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
""")
        self._spawn("containerd", ["containerd", "--config", str(folder / "config.toml")])
        self._wait("containerd", lambda: self.socket.exists() and self.ctr("version", check=False).returncode == 0)

    def _import(self, images: list[str], podman: list[str]) -> None:
        """Images from the podman store into containerd's (as a node import would from a registry): those
        missing there, or built again since they were imported (``imported.json`` records the image IDs)."""
        if _run(*podman, "image", "exists", PAUSE_IMAGE, check=False).returncode != 0:
            self._build_pause(podman)
        record = self.store / "imported.json"
        imported = json.loads(record.read_text()) if record.exists() else {}
        present = set(self.ctr("images", "ls", "-q").stdout.decode().split())
        wanted = {image: _run(*podman, "image", "inspect", "--format", "{{.Id}}", image).stdout.decode().strip()
                  for image in [PAUSE_IMAGE, *images]}
        missing = [image for image, built in wanted.items() if image not in present or imported.get(image) != built]
        if missing:
            started = time.monotonic()
            self.ctr("images", "rm", *[image for image in missing if image in present], check=False)
            with subprocess.Popen([*podman, "save", "--multi-image-archive", *missing], stdout=subprocess.PIPE) as save:
                self.ctr("images", "import", "-", stdin=save.stdout)
            if save.returncode != 0:
                raise RuntimeError(f"podman save {' '.join(missing)} exited {save.returncode}")
            record.write_text(json.dumps({**imported, **{image: wanted[image] for image in missing}}, indent=1))
            print(f"imported {', '.join(missing)} into the node's containerd in {time.monotonic() - started:.0f} s")

    def _build_pause(self, podman: list[str]) -> None:
        """The pause image from the Kubernetes module's own source (no registry here)."""
        folder = self.workdir / "pause"
        folder.mkdir(exist_ok=True)
        modules = _run("go", "env", "GOMODCACHE").stdout.decode().strip()
        _run("gcc", "-static", "-O2", "-DVERSION=3.10", "-o", str(folder / "pause"),
             f"{modules}/{KUBERNETES_MODULE}/build/pause/linux/pause.c")
        (folder / "Containerfile").write_text('FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')
        _run(*podman, "build", "-q", "-t", PAUSE_IMAGE, "-f", str(folder / "Containerfile"), str(folder))

    def _kubelet(self) -> None:
        assert self.plane is not None
        folder = self.workdir / "kubelet"
        folder.mkdir(exist_ok=True)
        (folder / "config.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},  # on the bridge only: the API server reads logs
            "authorization": {"mode": "AlwaysAllow"},
            "address": self.gateway, "port": 10250, "readOnlyPort": 0, "healthzPort": 0,
            # the pods ask CoreDNS on the gateway address directly: UDP through a Service address to a host
            # process got no answer here (TCP did), so there is no kube-dns Service in between
            "clusterDNS": [self.gateway], "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
            "podCIDR": self.pod_cidr, "serializeImagePulls": False,
            # a small disk is no reason to evict the tests' pods or to collect their images
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
        }))
        self._spawn("kubelet", [str(binary("kubelet")), "--config", str(folder / "config.yaml"),
                                "--kubeconfig", str(self.plane.admin_kubeconfig), "--hostname-override", self.name,
                                "--node-ip", self.gateway, "--root-dir", str(folder / "root"),
                                "--cert-dir", str(folder / "pki")])

        def ready() -> bool:
            done = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)  # type: ignore[union-attr]
            if done.returncode != 0:
                return False
            conditions = json.loads(done.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        self._wait("the node", ready)

    def _coredns(self) -> None:
        """CoreDNS on the gateway address, the pods' name server: cluster names from the API server, others from
        this machine's resolver."""
        assert self.plane is not None
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {self.gateway}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.admin_kubeconfig} admin
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
}}
""")
        self._spawn("coredns", [str(binary("coredns")), "-conf", str(corefile)])

    def local_volume(self, name: str, claim: tuple[str, str], size: str = "10Gi") -> Path:
        """A PersistentVolume on a folder of this node, of the default (empty) storage class and reserved for
        ``claim`` (namespace, name), so that each claim binds the folder meant for it."""
        assert self.plane is not None
        folder = self.workdir / "volumes" / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the pods run as uid 10001
        namespace, claim_name = claim
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                     "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": namespace, "name": claim_name},
                     "hostPath": {"path": str(folder), "type": "Directory"}}}))
        return folder

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Every pod's containers, sandboxes (their network with them) and mounts, then every process: the
        kubelet stops what it can, what is left is killed through containerd, and containerd goes last."""
        if self.plane is not None:
            self.plane.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period", "0", "--force",
                               "--wait=false", check=False)
        if self.socket.exists():
            deadline = time.monotonic() + 30  # the kubelet stops the sandboxes (CNI DEL) of deleted pods; then ctr
            while self._running_tasks() and time.monotonic() < deadline:
                time.sleep(1)
        containerd = [proc for proc in self.procs if Path(str(proc.args[0])).name == "containerd"]
        others = [proc for proc in self.procs if proc not in containerd]
        terminate(reversed(others))
        self._kill_containers()
        terminate(containerd)
        self._kill_shims()
        _run(str(binary("kube-proxy")), "--cleanup", check=False)  # its iptables chains
        _remove_chains()
        self._unmount()

    def _running_tasks(self) -> list[str]:
        done = self.ctr("tasks", "ls", check=False)
        lines = done.stdout.decode().splitlines()[1:] if done.returncode == 0 else []
        return [line.split()[0] for line in lines if "RUNNING" in line.split()]

    def _kill_containers(self) -> None:
        """What the kubelet did not stop: kill and delete each task and container left in containerd."""
        if not self.socket.exists() or self.ctr("version", check=False).returncode != 0:
            return
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.decode().split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            self.ctr("tasks", "delete", "-f", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.decode().split():
            self.ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        """A runtime shim of this node's containerd that outlived it, with its container's processes."""
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in cmdline:
                _run("pkill", "-KILL", "-P", proc.name, check=False)
                _run("kill", "-KILL", proc.name, check=False)

    def _unmount(self) -> None:
        """Mounts under the work folder (projected tokens, volumes, the runtime's layers), deepest first."""
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(str(self.workdir))), key=len, reverse=True):
            _run("umount", "-l", target, check=False)
        for netns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").exists() else []:
            _run("ip", "netns", "delete", netns.name, check=False)


# What the kubelet and kube-proxy leave in iptables beyond what `kube-proxy --cleanup` removes: (table, chain).
LEFT_CHAINS = (("filter", "KUBE-FIREWALL"), ("mangle", "KUBE-IPTABLES-HINT"), ("nat", "KUBE-KUBELET-CANARY"),
               ("mangle", "KUBE-KUBELET-CANARY"), ("filter", "KUBE-KUBELET-CANARY"))


def _remove_chains() -> None:
    for tool in ("iptables", "ip6tables"):
        for table, chain in LEFT_CHAINS:
            for parent in ("INPUT", "OUTPUT"):
                while _run(tool, "-t", table, "-D", parent, "-j", chain, check=False).returncode == 0:
                    pass
            _run(tool, "-t", table, "-F", chain, check=False)
            _run(tool, "-t", table, "-X", chain, check=False)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def podman_command(root: Path) -> list[str]:
    """podman with the project's own image store (`make images PODMAN=...` builds into it)."""
    return ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run")]


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # files the pods' uid wrote, read-only layers: once more as root after unmounting
        _run("rm", "-rf", str(path), check=False)

