"""A trial folder read into a summary: its phase, the failing stage and reason, accuracies, estimate and
benchmark. The local runner, the operator's status, the CLI and the report all read trials through it."""

from __future__ import annotations

from pathlib import Path

from fpgaflow.trial import RUN_STAGES, STAGES, TrialDir, read_json


def trial_summary(trial: TrialDir) -> dict:
    """What a trial folder says about itself: phase, failing stage and reason, accuracies, benchmark."""
    meta = trial.meta()
    summary: dict = {"name": trial.root.name, "parameters": meta.get("parameters", {}), "phase": "Pending", "stage": None}
    stages = trial.stages()
    summary["stages"] = list(stages)
    if stages != STAGES:
        summary["note"] = "trained by train.command without a Keras model: convert, serve and bench do not apply"
    for stage in (s for s in stages if s in RUN_STAGES):  # serve runs until stopped: it writes no result
        error = trial.error(stage)
        if error:
            summary.update(phase="Failed", stage=stage, reason=error["reason"], message=error["message"])
            break
        if not trial.done(stage):
            summary["stage"] = stage
            break
    else:
        summary.update(phase="Succeeded", stage=None)
    train, convert, bench = trial.result("train"), trial.result("convert"), trial.result("bench")
    fidelity = (convert or {}).get("fidelity", {})
    train = train or {}
    summary["accuracy"] = {
        "float": train.get("accuracy_float", train.get("accuracy")),
        "fixed": train.get("accuracy_qat"),  # the quantization-aware model's own accuracy, when the spec trains one
        "emulated": fidelity.get("accuracy_emulated"),
    }
    summary["argmax_agreement"] = fidelity.get("argmax_agreement")
    summary["fidelity"] = fidelity or None
    summary["dataset"] = train.get("dataset")
    results_path = trial.stage_dir("bench") / "results.json"
    if bench is not None and results_path.exists():  # the full record: the benchmark's spec, the targets, every run
        bench = {**bench, **read_json(results_path)}
    summary["benchmark"] = bench
    summary["timing"] = (convert or {}).get("timing")  # the converter's modelled device latency
    summary["retrained"] = (convert or {}).get("retrained")  # quantize.retrainHead: version 2 of the model
    summary["estimate"] = (convert or {}).get("estimate")  # FPGA resources and latency, estimated without vendor tools
    summary["reuse_factor_corrections"] = (convert or {}).get("reuse_factor_corrections") or []
    train_dir = trial.stage_dir("train")
    summary["provenance"] = {name: read_json(train_dir / f"{name}.json") for name in ("git", "host")
                             if (train_dir / f"{name}.json").exists()} or None
    return summary


def record_summary(record: dict, where: str) -> dict:
    """A trial's summary from the run store's row alone (``RunStore.experiment``'s "trials"), for a trial whose
    folder is elsewhere (on a cluster's artifacts volume): its phase, stage, accuracies, and the results the row
    keeps (the benchmark and estimate as the Experiment's status gave them)."""
    results = record.get("results") or {}
    return {"name": record["name"], "parameters": record.get("parameters") or {}, "phase": record.get("phase"),
            "stage": record.get("stage"), "reason": record.get("reason"), "message": record.get("message"),
            "stages": [], "note": f"its folder is {where}",
            "accuracy": {"float": record.get("accuracy_float"), "fixed": None, "emulated": record.get("accuracy_emulated")},
            "argmax_agreement": record.get("argmax_agreement"), "fidelity": None, "dataset": None, "benchmark": None,
            "timing": None, "retrained": None, "estimate": results.get("estimate"), "reuse_factor_corrections": [],
            "provenance": None, "results": results}


def experiment_facts(folder: Path) -> dict:
    """The report's header lines, from experiment.json: the manifest, the folder, the git commit."""
    meta = read_json(folder / "experiment.json")
    return {"manifest": meta.get("manifest_path", "—"), "folder": str(folder),
            "git commit": (meta.get("git") or {}).get("commit") or "not in git"}


def stored_summaries(folder: Path, records: list[dict] | None = None) -> list[dict]:
    """The summaries of an experiment's trials, read from their folders: the trials the index lists
    (``records``, rows of RunStore.experiment's "trials"), else every trial folder. A trial the runner
    failed from outside its folder (no server came up, a batch job that never started) is Failed with the
    index's reason, as the runner reported it. A trial whose folder is not here (run on a cluster whose results
    were not copied) is its row."""
    if records is None:
        records = [{"name": d.name} for d in sorted(folder.iterdir()) if (d / "spec.json").exists()]
    summaries = []
    for record in records:
        if not (folder / record["name"] / "spec.json").exists():
            summaries.append(record_summary(record, "on the cluster's artifacts volume"))
            continue
        summary = trial_summary(TrialDir(folder / record["name"]))
        if record.get("phase") == "Failed" and summary["phase"] != "Failed":
            summary |= {"phase": "Failed", "reason": record.get("reason"), "message": record.get("message")}
        summaries.append(summary)
    return summaries
