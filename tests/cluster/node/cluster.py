"""A one-node cluster on this machine, for a person trying the chart by hand (`make cluster-up`, `make
cluster-down`): the same control plane and node as the cluster tests' fixture (tests/cluster/conftest.py), with
the images of `make node` imported and a local volume reserved for the chart's artifacts claim.

    python -m tests.cluster.node.cluster up      starts it in the background; returns once the node is Ready
    python -m tests.cluster.node.cluster down    stops everything it started and removes its folder

Everything lives in .cache/cluster: the admin kubeconfig (admin.kubeconfig), the log (cluster.log), the pid of
the process that holds the cluster (pid), and the node's work folder with the volume's files (node/volumes/).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
FOLDER = ROOT / ".cache" / "cluster"
NODE_STORE = ROOT / ".cache" / "node" / "containerd"  # the node's images stay imported between runs
CHART_CLAIM = ("fpgaflow", "fpgaflow-artifacts")  # what `helm install fpgaflow ... --namespace fpgaflow` claims


def node_images() -> list[str]:
    """Every image the chart names but the CUDA variant (the node has no GPU): what `make node` builds."""
    from charts.images import images

    return [image for key, image in images().items() if key != "inferenceGpu"]


@contextmanager
def running(plane_folder: Path, node_folder: Path) -> Iterator[tuple[Any, Any]]:
    """(control plane, node) started, the images of `make node` imported; on leaving, everything stopped and the
    network removed. The cluster tests' fixture and ``hold`` both run the cluster through this."""
    from tests.cluster.controlplane import ControlPlane
    from tests.cluster.node.node import Node, podman_command

    node = Node(node_folder, store=NODE_STORE).prepare()  # the bridge first: the API server binds its gateway
    plane = ControlPlane(plane_folder, address=node.gateway, real_pods=True)
    try:
        plane.start()
        node.start(plane, images=node_images(), podman=podman_command(ROOT / ".cache" / "containers"))
        yield plane, node
    finally:
        node.stop()
        plane.stop()
        node.remove_network()


def hold(folder: Path) -> None:
    """Start the cluster, say so (``ready``), and stop it all on SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with running(folder, folder / "node") as (plane, node):
        node.local_volume("fpgaflow-artifacts", claim=CHART_CLAIM)
        (folder / "ready").write_text(plane.server)
        print(f"ready: the API server at {plane.server}", flush=True)
        stop.wait()
        print("stopping", flush=True)


def up(folder: Path, timeout: float = 1800) -> int:
    if os.geteuid() != 0:
        print("make cluster-up: the node (containerd, the kubelet, its network) needs root", file=sys.stderr)
        return 1
    pid = folder / "pid"
    if pid.exists() and _alive(int(pid.read_text())):
        print(f"already up (pid {pid.read_text().strip()}); export KUBECONFIG={folder / 'admin.kubeconfig'}")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ready").unlink(missing_ok=True)
    with (folder / "cluster.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.node.cluster", "hold", "--folder", str(folder)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while not (folder / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"the cluster did not come up; the end of {folder / 'cluster.log'}:", file=sys.stderr)
            print((folder / "cluster.log").read_text()[-3000:], file=sys.stderr)
            if proc.poll() is None:
                proc.terminate()
            return 1
        time.sleep(1)
    print(f"up: one node, the images imported. export KUBECONFIG={folder / 'admin.kubeconfig'} "
          f"PATH={ROOT / '.cache' / 'envtest' / 'bin'}:$PATH")
    return 0


def down(folder: Path, timeout: float = 300) -> int:
    from tests.cluster.node.node import remove_tree

    pid = folder / "pid"
    if pid.exists() and _alive(number := int(pid.read_text())):
        os.kill(number, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(number) and time.monotonic() < deadline:
            time.sleep(1)
        if _alive(number):
            print(f"the cluster (pid {number}) did not stop in {timeout:.0f} s; see {folder / 'cluster.log'}", file=sys.stderr)
            return 1
    remove_tree(folder)
    print("down: every process, pod, mount and network of the cluster is gone")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.node.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "hold"])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    args = parser.parse_args()
    if args.action == "hold":
        hold(args.folder)
        return 0
    return up(args.folder) if args.action == "up" else down(args.folder)


if __name__ == "__main__":
    sys.exit(main())
