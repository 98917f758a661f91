"""The Kubernetes executor: a run is the Experiment resource, created in the server's namespace and run by the
operator (charts/fpgaflow), as `kubectl apply` would; the server follows its status and copies it into the run
store as it changes, so `queue`, `watch`, `list`, `show` and `export --csv` see the trials' phase, stage,
accuracies and benchmark. A cancel deletes the resource (the operator's Jobs and Deployments go with it).

While it runs, the trials' folders are on the cluster's artifacts volume and the run store holds the
Experiment's status (``<home>/experiments/<name>/status.json``) and the index rows. When it ends, the server
copies the experiment's folder from that volume into the run store, as `kubectl cp` does (a tar stream from
the operator's pod, which mounts the volume), and writes its experiment.json and report, so `fpgaflow show`
and `fpgaflow report` read it as they read a local run. The entry's ``run.log`` says what the server saw: the
resource created, each change of a trial's phase or stage, the copy, the end. The cluster is the one of the
server's kubeconfig (``--kubeconfig``, else $KUBECONFIG, ~/.kube/config, or the pod's service account); that
identity needs, in the namespace, experiments (create, get, list, delete), pods (list) and pods/exec (create),
and nodes and pods in all namespaces (list) for `fpgaflow resources`.
"""

from __future__ import annotations

import json
import math
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

from fpgaflow.errors import FpgaflowError
from fpgaflow.spec import (
    API_VERSION,
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_STAGE,
    LABEL_TARGET,
    LABEL_TRIAL,
    parse_experiment,
    spec_hash,
)
from fpgaflow.store import RunStore
from fpgaflow.trial import write_json
from fpgaflow_manager.executors import FINISHED, LOST, RUNNING, Pool, Status

VERSION, PLURAL = API_VERSION.split("/")[1], "experiments"
ENTRY_LABEL = "fpgaflow.io/queue-entry"  # the queue entry that created the resource (a restart adopts it)


class KubernetesError(FpgaflowError):
    reason = "KubernetesError"


def quantity(text: str | None) -> float:
    """A Kubernetes quantity as a number: "2" 2, "1500m" 1.5, "4Gi" 4 * 2**30, "128974848" as is."""
    if not text:
        return 0.0
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def trial_rows(status: dict) -> list[dict]:
    """The run store's trial columns from the Experiment's status.trials."""
    rows = []
    for t in status.get("trials") or []:
        accuracy = t.get("accuracy") or {}
        rows.append({"name": t["name"], "parameters": t.get("parameters") or {}, "phase": t.get("phase") or "Pending",
                     "stage": t.get("stage"), "reason": t.get("reason"), "message": t.get("message"),
                     "accuracy_float": accuracy.get("float"), "accuracy_emulated": accuracy.get("emulated"),
                     "results": {k: v for k, v in t.items() if k not in ("name", "parameters", "phase", "stage")}})
    return rows


def progress_lines(old: dict, new: dict) -> list[str]:
    """What changed between two statuses, as the run log says it: the phase, and each trial's phase and stage."""
    lines = []
    if old.get("phase") != new.get("phase"):
        lines.append(f"experiment {new.get('phase') or 'Pending'}")
    before = {t["name"]: (t.get("phase"), t.get("stage")) for t in old.get("trials") or []}
    for t in new.get("trials") or []:
        if before.get(t["name"]) != (t.get("phase"), t.get("stage")):
            lines.append(f"{t['name']}: {t.get('phase')}" + (f" ({t['stage']})" if t.get("stage") else ""))
    return lines


def artifacts_holder(pods: list[dict]) -> tuple[str, str, PurePosixPath] | None:
    """The running pod that mounts the artifacts volume where the operator's trials write (the operator's: it
    names the mount in FPGAFLOW_ARTIFACTS_ROOT), as (pod, container, root); ``pods`` as the API serializes them."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == "FPGAFLOW_ARTIFACTS_ROOT" and env.get("value"):
                    return pod["metadata"]["name"], container["name"], PurePosixPath(env["value"])
    return None


def log_file(labels: dict[str, str]) -> str | None:
    """Where a pod's log goes in the experiment's folder, as a local run writes it: a stage Job's pod to
    ``<trial>/<stage>/log.txt``, a server's to ``<trial>/serve/<target>/log.txt``."""
    trial = labels.get(LABEL_TRIAL)
    if not trial:
        return None
    if labels.get(LABEL_STAGE):
        return f"{trial}/{labels[LABEL_STAGE]}/log.txt"
    if labels.get(LABEL_TARGET):
        return f"{trial}/serve/{labels[LABEL_TARGET]}/log.txt"
    return None


def unpack(archive: Path, into: Path) -> None:
    """A copied folder's tar archive into ``into``, each top-level item replacing the one it held. Members that
    would land outside (absolute paths, "..", links out) or are neither files, folders nor links inside are
    refused by tarfile's data filter, and then nothing is replaced."""
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=into))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        for item in sorted(staging.iterdir()):
            target = into / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            item.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, home: Path, namespace: str, kubeconfig: Path | None = None, recheck_seconds: float = 10.0):
        self.store = RunStore(home)
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.recheck_seconds = recheck_seconds
        self._apis: tuple | None = None
        self._checked = (-math.inf, "")
        self._seen: dict[int, dict] = {}  # entry id: the last status copied
        self._copying: dict[int, threading.Thread] = {}  # entry id: the copy of its ended experiment's results
        self._hashes: dict[int, str] = {}  # entry id: its spec's hash (the manifest parsed once)

    def _clients(self):
        if self._apis is None:
            from kubernetes import client, config

            try:
                if self.kubeconfig is not None:
                    config.load_kube_config(config_file=str(self.kubeconfig))
                else:
                    try:
                        config.load_kube_config()
                    except config.ConfigException:
                        config.load_incluster_config()
            except (config.ConfigException, OSError) as exc:
                raise KubernetesError(f"no cluster to reach: {exc}") from None
            self._apis = (client.CustomObjectsApi(), client.CoreV1Api())
        return self._apis

    def _call(self, what: str, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"{what}: {exc.status} {exc.reason}: {_message(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise KubernetesError(f"{what}: {exc}") from None

    def unavailable(self) -> str | None:
        when, why = self._checked
        if time.monotonic() - when >= self.recheck_seconds:
            try:
                custom, _ = self._clients()
                self._call("listing Experiments", custom.list_namespaced_custom_object, GROUP, VERSION,
                           self.namespace, PLURAL, limit=1)
                why = ""
            except KubernetesError as exc:
                why = f"the cluster cannot be reached or lacks the Experiment CRD (helm install the chart): {exc}"
            self._checked = (time.monotonic(), why)
        return why or None

    def log_path(self, entry: dict, folder: Path) -> Path:
        return folder / "run.log"

    def _say(self, entry: dict, folder: Path, line: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with self.log_path(entry, folder).open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def start(self, entry: dict, folder: Path) -> dict:
        """Create the Experiment; one this entry created before (a server stopped in between) is adopted."""
        custom, _ = self._clients()
        body = without_nulls(entry["manifest"])  # as a manifest file says it: the CRD's enums refuse a null
        body["metadata"] = {**body["metadata"], "namespace": self.namespace,
                            "labels": {**(body["metadata"].get("labels") or {}), ENTRY_LABEL: str(entry["id"])}}
        body.pop("status", None)
        from kubernetes.client.exceptions import ApiException

        try:
            created = custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status != 409:
                raise KubernetesError(f"creating Experiment {self.namespace}/{entry['name']}: {exc.status} "
                                      f"{exc.reason}: {_message(exc)}") from None
            created = self._call("reading the existing Experiment", custom.get_namespaced_custom_object, GROUP,
                                 VERSION, self.namespace, PLURAL, entry["name"])
            if created is None or created["metadata"].get("labels", {}).get(ENTRY_LABEL) != str(entry["id"]):
                raise KubernetesError(f"an Experiment named {entry['name']!r} already exists in namespace "
                                      f"{self.namespace} (kubectl delete experiment {entry['name']} -n {self.namespace}, "
                                      "or rename it)") from None
        uid = created["metadata"]["uid"]
        self._say(entry, folder, f"created Experiment {self.namespace}/{entry['name']} (uid {uid}); the operator runs it")
        self._copy(entry, folder, created.get("status") or {}, "Running")
        return {"namespace": self.namespace, "name": entry["name"], "uid": uid}

    def poll(self, entry: dict, folder: Path) -> Status:
        custom, _ = self._clients()
        try:
            obj = self._call("reading the Experiment", custom.get_namespaced_custom_object, GROUP, VERSION,
                             self.namespace, PLURAL, entry["name"])
        except KubernetesError as exc:  # the API server is away for a moment: the run goes on in the cluster
            self._say(entry, folder, f"status unknown for now: {exc}")
            return Status(RUNNING)
        uid = (entry.get("handle") or {}).get("uid")
        if obj is None or (uid and obj["metadata"]["uid"] != uid):
            return Status(LOST, message=f"the Experiment {self.namespace}/{entry['name']} was deleted outside the server")
        status = obj.get("status") or {}
        phase = status.get("phase") or "Pending"
        self._copy(entry, folder, status, phase if phase in ("Succeeded", "Failed") else "Running")
        if phase in ("Succeeded", "Failed") and not self._copied(entry, folder):
            return Status(RUNNING)
        if phase == "Succeeded":
            return Status(FINISHED, 0)
        if phase == "Failed":
            why = "; ".join(c.get("message", "") for c in status.get("conditions") or [] if c.get("status") == "False")
            return Status(FINISHED, 1, message=why)
        return Status(RUNNING)

    def _spec_hash(self, entry: dict) -> str:
        if entry["id"] not in self._hashes:
            self._hashes[entry["id"]] = spec_hash(parse_experiment(entry["manifest"], entry["source"] or "manifest").spec)
        return self._hashes[entry["id"]]

    def _copy(self, entry: dict, folder: Path, status: dict, phase: str) -> None:
        """The status into the run store (the index's rows and status.json), and its changes into the run log."""
        old = self._seen.get(entry["id"])
        if old == status and phase == "Running":
            return
        for line in progress_lines(old or {}, status):
            self._say(entry, folder, line)
        self._seen[entry["id"]] = status
        self.store.upsert_experiment(entry["name"], self._spec_hash(entry), entry["manifest"], entry["git"] or {}, phase)
        write_json(self.store.experiment_dir(entry["name"]) / "status.json",
                   {"namespace": self.namespace, "status": status})
        for row in trial_rows(status):
            name, parameters = row.pop("name"), row.pop("parameters")
            self.store.update_trial(entry["name"], name, parameters, **row)

    def _copied(self, entry: dict, folder: Path) -> bool:
        """Whether the ended experiment's results are copied (or could not be). The copy runs in a thread of its
        own, so that the server's loop, and with it the queue, never waits for it."""
        thread = self._copying.get(entry["id"])
        if thread is None:
            thread = threading.Thread(target=self._fetch, args=(entry, folder), name=f"copy-{entry['name']}",
                                      daemon=True)
            self._copying[entry["id"]] = thread
            thread.start()
        if thread.is_alive():
            return False
        del self._copying[entry["id"]]
        return True

    def _fetch(self, entry: dict, folder: Path) -> None:
        """The ended experiment's folder from the artifacts volume into the run store, with its experiment.json
        and report. What cannot be copied is said in the run log; show and export keep the status's rows."""
        name, target = entry["name"], self.store.experiment_dir(entry["name"])
        try:
            archive = self._tar(name, folder)
            try:
                unpack(archive, target)
            finally:
                archive.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - in its own thread: whatever fails (the websocket too) is said
            self._say(entry, folder, f"results not copied from the cluster: {type(exc).__name__}: {exc}")
            return
        self._pod_logs(entry, folder, target)
        write_json(target / "experiment.json", {
            "name": name, "spec_hash": self._spec_hash(entry), "manifest": entry["manifest"],
            "manifest_path": entry["source"], "git": entry["git"] or {},
            "ran_on": f"Kubernetes, namespace {self.namespace} (fpgaflow server)"})
        from fpgaflow.report import regenerate

        try:
            report, _ = regenerate(self.store, name)
        except Exception as exc:  # noqa: BLE001 - the copy stands; `fpgaflow report` can be run again
            self._say(entry, folder, f"results copied into {target}; the report failed: {exc}")
            return
        self._say(entry, folder, f"results copied into {target}; report {report}")

    def _pod_logs(self, entry: dict, folder: Path, target: Path) -> None:
        """The logs of the experiment's pods that are still there (its stage Jobs' pods, its servers) into its
        folder, where `fpgaflow logs NAME --trial T --stage S` reads them; a stage tried more than once has
        each pod's log in turn."""
        _, core = self._clients()
        try:
            pods = self._call("listing the experiment's pods", core.list_namespaced_pod, self.namespace,
                              label_selector=f"{LABEL_EXPERIMENT}={entry['name']}")
        except KubernetesError as exc:
            self._say(entry, folder, f"stage logs not copied: {exc}")
            return
        logs: dict[str, list[str]] = {}
        for pod in sorted(pods.items if pods else [], key=lambda p: p.metadata.creation_timestamp):
            where = log_file(pod.metadata.labels or {})
            if where is None:
                continue
            try:
                text = self._call(f"reading pod {pod.metadata.name}'s log", core.read_namespaced_pod_log,
                                  pod.metadata.name, self.namespace, container=pod.spec.containers[0].name)
            except KubernetesError as exc:
                text = f"(not read: {exc})\n"
            logs.setdefault(where, []).append(f"--- pod {pod.metadata.name} ---\n{text or ''}")
        for where, parts in logs.items():
            path = target / where
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(part if part.endswith("\n") else part + "\n" for part in parts))

    def _tar(self, name: str, folder: Path) -> Path:
        """The experiment's folder on the artifacts volume as a tar archive in ``folder``: `tar` run in the pod
        that mounts the volume, its output read from the exec stream."""
        from kubernetes.stream import stream

        _, core = self._clients()
        pods = self._call("listing pods", core.list_namespaced_pod, self.namespace)
        holder = artifacts_holder(core.api_client.sanitize_for_serialization(pods.items) if pods else [])
        if holder is None:
            raise KubernetesError(f"no running pod in namespace {self.namespace} mounts the artifacts volume "
                                  "(the operator's, from the chart)")
        pod, container, root = holder
        source = root / self.namespace / name
        try:
            ws = stream(core.connect_get_namespaced_pod_exec, pod, self.namespace, container=container,
                        command=["tar", "cf", "-", "-C", str(source), "."], stdin=False, stdout=True, stderr=True,
                        tty=False, binary=True, _preload_content=False)
        except Exception as exc:  # noqa: BLE001 - the websocket client wraps its failures in several types
            raise KubernetesError(f"exec in pod {pod}: {exc}") from None
        archive, errors = folder / "results.tar", b""
        deadline = time.monotonic() + 600
        with archive.open("wb") as out:
            try:
                while ws.is_open():
                    if time.monotonic() > deadline:
                        raise KubernetesError(f"copying {source} from pod {pod} took over 10 minutes")
                    ws.update(timeout=1)
                    out.write(ws.read_stdout() or b"")
                    errors += ws.read_stderr() or b""
                out.write(ws.read_stdout() or b"")
                errors += ws.read_stderr() or b""
                code = ws.returncode
            finally:
                ws.close()
        if code != 0:
            archive.unlink(missing_ok=True)
            raise KubernetesError(f"tar of {source} in pod {pod} exited {code}: "
                                  f"{errors.decode(errors='replace').strip()[-300:]}")
        return archive

    def cancel(self, entry: dict, folder: Path) -> None:
        custom, _ = self._clients()
        self._call("deleting the Experiment", custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                   PLURAL, entry["name"], propagation_policy="Foreground")
        self._say(entry, folder, f"deleted Experiment {self.namespace}/{entry['name']} (cancelled)")

    def resources(self) -> list[Pool]:
        """Each node's allocatable CPUs, memory and GPUs (nvidia.com/gpu), less what its pods request."""
        _, core = self._clients()
        nodes = self._call("listing nodes", core.list_node)
        pods = self._call("listing pods", core.list_pod_for_all_namespaces,
                          field_selector="status.phase!=Succeeded,status.phase!=Failed")
        requested: dict[str, dict[str, float]] = {}
        for pod in (pods.items if pods else []):
            used = requested.setdefault(pod.spec.node_name or "", {})
            for container in pod.spec.containers:
                for key, value in ((container.resources and container.resources.requests) or {}).items():
                    used[key] = used.get(key, 0.0) + quantity(value)
        pools = []
        for node in (nodes.items if nodes else []):
            free = node.status.allocatable or {}
            used = requested.get(node.metadata.name, {})
            cpus, memory = quantity(free.get("cpu")), quantity(free.get("memory"))
            gpus = int(quantity(free.get("nvidia.com/gpu")))
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            pools.append(Pool(self.name, node.metadata.name, cpus, max(0.0, cpus - used.get("cpu", 0.0)), int(memory),
                              int(max(0.0, memory - used.get("memory", 0.0))), gpus,
                              max(0, gpus - int(used.get("nvidia.com/gpu", 0))),
                              note=("Ready" if ready else "not Ready") + "; free: allocatable less the pods' requests"))
        return pools


def without_nulls(doc):
    """A copy of a JSON document without its null values (unset optional fields)."""
    if isinstance(doc, dict):
        return {k: without_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [without_nulls(v) for v in doc]
    return doc


def _message(exc) -> str:
    try:
        return json.loads(exc.body).get("message", "")
    except (TypeError, ValueError):
        return str(exc.body or "")
