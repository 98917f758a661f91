"""`fpgaflow server` and its client commands (`submit`, `queue`, `cancel`, `watch`, `logs`, `resources`),
registered with the fpgaflow command through the ``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaflow.cli import home_folder
from fpgaflow.errors import ConfigError, FpgaflowError
from fpgaflow_manager import DEFAULT_PORT

if TYPE_CHECKING:
    from fpgaflow_manager.executors import Executor

EXECUTOR_NOTES = {"kubernetes": "the server was not started with --kubernetes",
                  "slurm": "the server was not started with --slurm"}


def _limits(args):
    from fpgaflow_manager.queue import Limits

    per: dict[str, int] = {}
    for item in args.limit or []:
        name, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--limit {item!r}: expected EXECUTOR=N with N >= 1 (e.g. local=2)")
        per[name] = int(value)
    return Limits(max_slots=args.max_trials or len(os.sched_getaffinity(0)), per_executor=per)


def _executors(args, home: Path) -> tuple[dict[str, Executor], dict[str, str]]:
    """The executors the server runs on, and why each other one is not there. The Slurm executor's client tools
    find their cluster through this process's environment (SLURM_CONF), which its runs inherit."""
    from fpgaflow_manager.executors.local import LocalExecutor

    executors: dict[str, Executor] = {"local": LocalExecutor(home, live_metrics=args.live_metrics)}
    notes = dict(EXECUTOR_NOTES)
    if args.slurm:
        from fpgaflow_manager.executors.slurm import SlurmExecutor, SlurmSettings

        if args.slurm_cpus < 1 or args.slurm_max_resubmits < 0:
            raise ConfigError("--slurm-cpus must be 1 or more and --slurm-max-resubmits 0 or more")
        executors["slurm"] = SlurmExecutor(home, SlurmSettings(
            partition=args.slurm_partition, cpus=args.slurm_cpus, memory=args.slurm_memory,
            max_resubmits=args.slurm_max_resubmits))
        del notes["slurm"]
    if args.kubernetes:
        from fpgaflow_manager.executors.kubernetes import KubernetesExecutor

        executors["kubernetes"] = KubernetesExecutor(home, args.kube_namespace, args.kubeconfig)
        del notes["kubernetes"]
    if args.executor not in executors:
        raise ConfigError(f"--executor {args.executor}: {notes.get(args.executor, 'not configured')}")
    return executors, notes


def cmd_server(args) -> int:
    from fpgaflow_manager.manager import Manager, ManagerSettings
    from fpgaflow_manager.server import ListenSettings, serve

    home = home_folder(args).resolve()
    executors, notes = _executors(args, home)
    settings = ManagerSettings(home=home, limits=_limits(args), default_executor=args.executor,
                               allow_train_command=args.allow_train_command, max_attempts=args.max_attempts,
                               min_free_disk=int(args.min_free_disk_mib * 2**20), executor_notes=notes)
    listen = ListenSettings(host=args.host, port=args.port, token_file=args.token_file, tls_cert=args.tls_cert,
                            tls_key=args.tls_key, tls_client_ca=args.tls_client_ca)
    manager = Manager(settings, executors)

    def ready(address: str) -> None:
        print(f"fpgaflow server listening on {address}; run store {home}; executors {', '.join(executors)} "
              f"(default {args.executor}); {settings.limits.max_slots} trial slots", flush=True)

    return serve(manager, listen, ready)


def _client(args):
    from fpgaflow_manager.client import ManagerClient, connection

    return ManagerClient(connection(home_folder(args), args.server, args.token_file, args.tls_ca, args.tls_cert,
                                    args.tls_key))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "—"


def cmd_submit(args) -> int:
    code = 0
    with _client(args) as client:
        for path in args.files:
            try:
                e = client.submit(Path(path), executor=args.executor or "", priority=args.priority, replace=args.replace)
            except FpgaflowError as exc:  # each file alone: a bad one is refused, the others are queued
                print(f"fpgaflow submit: {exc}", file=sys.stderr)
                code = max(code, exc.exit_code)
                continue
            where = f"position {e['position']}" if e["state"] == "Queued" else e["state"].lower()
            print(f"{e['name']}: queued on {e['executor']} ({where}; {e['trials']} trial{'s' * (e['trials'] != 1)}, "
                  f"{e['slots']} slot{'s' * (e['slots'] != 1)}, priority {e['priority']})")
    return code


def cmd_queue(args) -> int:
    with _client(args) as client:
        reply = client.queue(all=args.all)
    if args.json:
        print(json.dumps(reply, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fpgaflow server: {reply['running_slots']} of {reply['max_slots']} trial slots in use",
                  title_justify="left")
    for column in ("#", "name", "state", "executor", "priority", "trials", "submitted", "started", "why it waits / how it ended"):
        table.add_column(column, overflow="fold")
    for e in reply["entries"]:
        note = e["waiting"] or " ".join(x for x in (e["reason"], e["message"]) if x)
        table.add_row(str(e["position"] or ""), e["name"], e["state"], e["executor"], str(e["priority"]),
                      f"{e['trials']} ({e['slots']} at once)", _when(e["submitted"]), _when(e["started"]), note)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def cmd_cancel(args) -> int:
    with _client(args) as client:
        for name in args.names:
            e = client.cancel(name)
            print(f"{e['name']}: {e['state'].lower()}")
    return 0


def _snapshot_lines(snap: dict) -> list[str]:
    e = snap["entry"]
    head = f"{e['name']}: {e['state']}"
    if e["state"] == "Queued":
        head += f" (position {e['position']}: {e['waiting'] or 'next'})"
    elif e["reason"] or e["message"]:
        head += f" ({' '.join(x for x in (e['reason'], e['message']) if x)})"
    lines = [head]
    for t in snap["trials"]:
        detail = t["progress"] or t["stage"]
        lines.append(f"  {t['name']} {t['phase']}{': ' + detail if detail and t['phase'] == 'Running' else ''}")
    return lines


def cmd_watch(args) -> int:
    last: dict = {}
    last_entry: dict = {}
    with _client(args) as client:
        for snap in client.watch(args.name):
            for line in _snapshot_lines(snap):
                key = line.split(":")[0]
                if last.get(key) != line:
                    print(line, flush=True)
                    last[key] = line
            last_entry = snap["entry"]
    return 0 if last_entry.get("state") == "Succeeded" else 1


def cmd_logs(args) -> int:
    with _client(args) as client:
        for data in client.logs(args.name, trial=args.trial or "", stage=args.stage or "", follow=args.follow,
                                tail=args.tail or 0):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    return 0


def cmd_resources(args) -> int:
    with _client(args) as client:
        reply = client.resources()
    if args.json:
        print(json.dumps(reply, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    gib = 2**30
    table = Table(title="resources per executor", title_justify="left")
    for column in ("executor", "where", "CPUs free", "memory free", "GPUs free", "trial slots in use", "note"):
        table.add_column(column, overflow="fold")
    for p in reply["pools"]:
        ex = p["executor"]
        table.add_row(ex, p["name"], f"{p['cpus_free']:g} of {p['cpus']:g}",
                      f"{int(p['memory_free_bytes']) / gib:.1f} of {int(p['memory_bytes']) / gib:.1f} GiB",
                      f"{p['gpus_free']} of {p['gpus']}",
                      f"{reply['slots_used'].get(ex, 0)} of {reply['slot_limits'].get(ex, reply['max_slots'])}", p["note"])
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def _client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="HOST:PORT of fpgaflow server (default: $FPGAFLOW_SERVER, else the local server "
                   "named in the run store's server.json, else 127.0.0.1:7750)")
    p.add_argument("--token-file", type=Path, help="the server's token (default: $FPGAFLOW_TOKEN, else server.json's)")
    p.add_argument("--tls-ca", type=Path, help="the CA of the server's certificate (TLS)")
    p.add_argument("--tls-cert", type=Path, help="this client's certificate, for a server that asks for one")
    p.add_argument("--tls-key", type=Path, help="the key of --tls-cert")
    p.add_argument("--home", help="run store folder, where a local server's address and token are (default: "
                   "$FPGAFLOW_HOME or ./fpgaflow-runs)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="a persistent queue of Experiments, run on local processes, as Slurm jobs "
                       "(--slurm) or by the Kubernetes operator (--kubernetes)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; any other needs "
                   "--token-file or --tls-client-ca)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one; the address goes to server.json)")
    p.add_argument("--home", help="run store folder (default: $FPGAFLOW_HOME or ./fpgaflow-runs)")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "kubernetes"],
                   help="executor of manifests that name none (slurm: with --slurm; kubernetes: with --kubernetes)")
    p.add_argument("--max-trials", type=int, help="trial slots running at once, all executors (default: the CPUs)")
    p.add_argument("--limit", action="append", metavar="EXECUTOR=N", help="an executor's own trial slots (repeat)")
    p.add_argument("--max-attempts", type=int, default=3, help="starts of one submission: a lost run is resumed")
    p.add_argument("--min-free-disk-mib", type=float, default=64,
                   help="refuse submissions while the run store has less free space (MiB)")
    p.add_argument("--allow-train-command", action="store_true",
                   help="run manifests' train.command (as this server's user); refused by default")
    p.add_argument("--live-metrics", action="store_true", help="a local Prometheus for each run, as `fpgaflow run` starts")
    p.add_argument("--token-file", type=Path, help="calls must carry this token (default on loopback: a new one in server.json)")
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate")
    p.add_argument("--tls-key", type=Path, help="the key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    p.add_argument("--slurm", action="store_true", help="the Slurm executor: each stage a batch job (the cluster "
                   "is the one the Slurm client tools find: $SLURM_CONF; the run store must be on a file system "
                   "the nodes share)")
    p.add_argument("--slurm-partition", help="partition of the jobs (default: the cluster's default)")
    p.add_argument("--slurm-cpus", type=int, default=2, help="CPUs of each job (default 2)")
    p.add_argument("--slurm-memory", help="memory of each job, as sbatch --mem takes it, e.g. 4G "
                   "(default: the cluster's, DefMemPerCPU)")
    p.add_argument("--slurm-max-resubmits", type=int, default=3,
                   help="submissions again of a job Slurm killed (time limit, preemption, node failure); the "
                   "stage resumes from its checkpoint")
    p.add_argument("--kubernetes", action="store_true", help="the Kubernetes executor: each run an Experiment "
                   "resource that the operator runs (helm install the chart first); its status is copied into the run store")
    p.add_argument("--kube-namespace", default="fpgaflow", help="namespace of the Experiments (default fpgaflow, the chart's)")
    p.add_argument("--kubeconfig", type=Path, help="the cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.set_defaults(fn=cmd_server)

    p = sub.add_parser("submit", help="queue Experiment manifests on fpgaflow server")
    p.add_argument("files", nargs="+")
    p.add_argument("--executor", choices=["local", "kubernetes", "slurm"], help="overrides spec.executor.name")
    p.add_argument("--priority", type=int, help="overrides spec.executor.priority (higher starts first)")
    p.add_argument("--replace", action="store_true", help="discard earlier results of an experiment whose spec changed")
    _client_arguments(p)
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("queue", help="the server's queued, running and (with --all) finished experiments")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    _client_arguments(p)
    p.set_defaults(fn=cmd_queue)

    p = sub.add_parser("cancel", help="stop queued or running experiments on the server")
    p.add_argument("names", nargs="+")
    _client_arguments(p)
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("watch", help="an experiment's state and its trials' stages and epochs, live, until it ends")
    p.add_argument("name")
    _client_arguments(p)
    p.set_defaults(fn=cmd_watch)

    p = sub.add_parser("logs", help="an experiment's run log, or a trial's stage log")
    p.add_argument("name")
    p.add_argument("--trial", help="a trial (t00, ...); without it, the run log")
    p.add_argument("--stage", help="train (default), convert, bench or serve/<target>; with --trial")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as the log grows, until the run ends")
    p.add_argument("--tail", type=int, help="only the last N bytes")
    _client_arguments(p)
    p.set_defaults(fn=cmd_logs)

    p = sub.add_parser("resources", help="free CPUs, memory and GPUs of each executor of the server")
    p.add_argument("--json", action="store_true")
    _client_arguments(p)
    p.set_defaults(fn=cmd_resources)
